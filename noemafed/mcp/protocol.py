"""What both ends of the MCP Streamable HTTP wire agree on (wire.md §5), so client and server cannot drift apart."""

from __future__ import annotations

# The newest revision: what the client asks for and what the server answers to a version it does not know.
LATEST_PROTOCOL_VERSION = "2025-11-25"
SUPPORTED_PROTOCOL_VERSIONS = (LATEST_PROTOCOL_VERSION, "2025-06-18", "2025-03-26", "2024-11-05")

SESSION_HEADER = "Mcp-Session-Id"
PROTOCOL_VERSION_HEADER = "MCP-Protocol-Version"
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"

ENDPOINT_PATH = "/mcp"
FEDERATION_ENDPOINT_PATH = "/mcp/federation"

JSONRPC_VERSION = "2.0"
INITIALIZE = "initialize"
INITIALIZED = "notifications/initialized"
PING = "ping"
TOOLS_LIST = "tools/list"
TOOLS_CALL = "tools/call"

CORTEX_IDENTITY = "cortex_identity"
SYNC_EVENTS = "sync_events"
SYNC_READ_SIGNAL = "sync_read_signal"

# JSON-RPC 2.0 error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
