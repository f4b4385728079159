"""The demo's upstream MCP servers: small in-memory stand-ins for the services the demo
tags talk about. `python demo.py payments|crm|orders|time` serves one over stdio.

They exist so that `scripts/serve` shows real tools through the gateway; replace them in
configs/gateway.yaml with your own servers.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

CUSTOMERS = {
    "C-1001": {"id": "C-1001", "name": "Maya Lopez", "email": "maya@example.com"},
    "C-1002": {"id": "C-1002", "name": "Tom Berg", "email": "tom@example.com"},
}
ORDERS = {
    "ORD-100001": {
        "order_id": "ORD-100001",
        "customer_id": "C-1001",
        "status": "delivered",
        "total": 84.50,
        "payment_id": "PAY-9001",
    },
    "ORD-100002": {
        "order_id": "ORD-100002",
        "customer_id": "C-1002",
        "status": "shipped",
        "total": 1250.00,
        "payment_id": "PAY-9002",
    },
}
PAYMENTS = {
    "PAY-9001": {"payment_id": "PAY-9001", "amount": 84.50, "currency": "USD", "refunded": 0.0},
    "PAY-9002": {"payment_id": "PAY-9002", "amount": 1250.00, "currency": "EUR", "refunded": 0.0},
}
NOTES: list[dict[str, str]] = []


def lookup(table: dict[str, dict[str, Any]], kind: str, key: str) -> dict[str, Any]:
    """`table[key]`, or a tool error the model can read: an exception that is not a
    ToolError reaches the caller only as "Error executing tool <name>"."""
    try:
        return table[key]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ToolError(f"no {kind} {key!r} (the demo has {known})") from None


def payments() -> MCPServer:
    server = MCPServer("payments")

    @server.tool(annotations={"readOnlyHint": True})
    def get_payment(payment_id: str) -> dict[str, object]:
        """A payment, with what is still refundable."""
        payment = lookup(PAYMENTS, "payment", payment_id)
        return {**payment, "refundable": payment["amount"] - payment["refunded"]}

    @server.tool(annotations={"destructiveHint": True, "idempotentHint": False})
    def refund(
        order_id: str,
        amount: float,
        currency: str = "USD",
        reason: str = "",
        override_limits: bool = False,
    ) -> dict[str, object]:
        """Refund (part of) an order to its original payment method."""
        order = lookup(ORDERS, "order", order_id)
        payment = lookup(PAYMENTS, "payment", order["payment_id"])
        refundable = payment["amount"] - payment["refunded"]
        if amount > refundable:
            raise ToolError(f"{amount} is more than the refundable {refundable} of {order_id}")
        payment["refunded"] += amount
        return {"order_id": order_id, "refunded": amount, "currency": currency}

    @server.tool(annotations={"destructiveHint": True})
    def delete_merchant(merchant_id: str) -> str:
        """Remove a merchant account."""
        return f"merchant {merchant_id} deleted"

    return server


def crm() -> MCPServer:
    server = MCPServer("crm")

    @server.tool(annotations={"readOnlyHint": True})
    def search_customers(query: str) -> list[dict[str, str]]:
        """Customers whose name or email contains the query."""
        q = query.lower()
        return [c for c in CUSTOMERS.values() if q in c["name"].lower() or q in c["email"]]

    @server.tool(annotations={"readOnlyHint": True})
    def get_customer(customer_id: str) -> dict[str, str]:
        """One customer."""
        return lookup(CUSTOMERS, "customer", customer_id)

    @server.tool()
    def add_note(customer_id: str, text: str) -> str:
        """Add a note to a customer's record."""
        NOTES.append({"customer_id": customer_id, "text": text})
        return f"note {len(NOTES)} added"

    @server.tool(annotations={"destructiveHint": True})
    def delete_customer(customer_id: str) -> str:
        """Delete a customer."""
        return f"customer {customer_id} deleted"

    return server


def orders() -> MCPServer:
    server = MCPServer("orders")

    @server.tool(annotations={"readOnlyHint": True})
    def get_order(order_id: str) -> dict[str, object]:
        """One order."""
        return lookup(ORDERS, "order", order_id)

    @server.tool(annotations={"readOnlyHint": True})
    def list_orders(customer_id: str, status: str | None = None, limit: int = 10) -> list[object]:
        """A customer's orders, newest first."""
        found = [o for o in ORDERS.values() if o["customer_id"] == customer_id]
        return [o for o in found if status is None or o["status"] == status][:limit]

    return server


def clock() -> MCPServer:
    server = MCPServer("time")

    @server.tool(annotations={"readOnlyHint": True})
    def now(timezone: str = "UTC") -> str:
        """The current time in a time zone (IANA name)."""
        try:
            zone = ZoneInfo(timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ToolError(
                f"no time zone {timezone!r}: give an IANA name such as Europe/Paris"
            ) from None
        return datetime.now(zone).isoformat(timespec="seconds")

    return server


SERVERS = {"payments": payments, "crm": crm, "orders": orders, "time": clock}

if __name__ == "__main__":
    SERVERS[sys.argv[1]]().run("stdio")
