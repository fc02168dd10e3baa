"""The commands: one module per command family; each function returns a frozen report from reports/."""

from __future__ import annotations

from collections.abc import Iterable

from noemafed.text.gotext import go_quote

NOT_CONFIGURED = "peer {name} is not configured in cortex.md (known: {known})"


def not_configured(name: str, configured: Iterable[str]) -> str:
    """noema's refusal of a peer name cortex.md does not list (Go-quoted), naming the ones it does."""
    return NOT_CONFIGURED.format(name=go_quote(name), known=", ".join(configured))
