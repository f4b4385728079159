"""Who is calling: the identity every door hands to the Tag Manager."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    `roles` are the roles an identity provider vouched for. When it gives none, the roles
    listed for the user in the org's config file apply instead (see `tags.resolve`).
    """

    user_id: str
    org_id: str
    roles: tuple[str, ...] = ()
