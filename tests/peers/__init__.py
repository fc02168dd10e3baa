"""Real MCP peers for tests: a stdlib server imitating Go and Rust noema, and the official SDK as a subprocess."""
