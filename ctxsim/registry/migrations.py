"""Schema creation and versioning. (First version: create tables and stamp SCHEMA_VERSION;
upgrades of older files with a backup and refusal of newer files belong here.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import inspect, select

from ctxsim.registry.models import SCHEMA_VERSION, Base, Meta

if TYPE_CHECKING:
    from ctxsim.registry.db import Registry


def ensure_schema(reg: "Registry", create: bool = True) -> None:
    tables = set(inspect(reg.engine).get_table_names())
    if "meta" not in tables:
        if not create:
            return
        Base.metadata.create_all(reg.engine)
        with reg.begin() as s:
            s.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
        return
    with reg.begin() as s:
        row = s.scalar(select(Meta).where(Meta.key == "schema_version"))
        if row is None:
            s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
