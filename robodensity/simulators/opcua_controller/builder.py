"""Adding many nodes to an asyncua server in one batch, fast for thousands of robots."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, cast

from asyncua import Server, ua

WIDE_PARENT = 32
"""A parent with more children than this in one batch is added to without asyncua's scans."""


def node_id(ident: int | str, ns: int = 0) -> ua.NodeId:
    """``ua.NodeId`` for plain ints and strings (asyncua types its arguments as NewTypes)."""
    return ua.NodeId(cast(Any, ident), cast(Any, ns))


class NodeBatch:
    """Collects AddNodesItems in namespace ``ns`` and adds them in one batch (:meth:`commit`)."""

    def __init__(self, ns: int) -> None:
        self.ns = ns
        self.items: list[ua.AddNodesItem] = []
        self._auto = 0

    def _item(
        self,
        parent: ua.NodeId,
        nodeid: ua.NodeId,
        bname: ua.QualifiedName,
        cls: ua.NodeClass,
        ref: int,
        typedef: ua.NodeId,
        attrs: ua.ObjectAttributes | ua.VariableAttributes,
    ) -> None:
        attrs.DisplayName = ua.LocalizedText(bname.Name)
        item = ua.AddNodesItem()
        item.ParentNodeId = parent
        item.RequestedNewNodeId = nodeid
        item.BrowseName = bname
        item.NodeClass = cls
        item.ReferenceTypeId = node_id(ref)
        item.TypeDefinition = typedef
        item.NodeAttributes = attrs
        self.items.append(item)

    def obj(
        self,
        parent: ua.NodeId,
        ident: str,
        bname: ua.QualifiedName,
        typedef: ua.NodeId | None = None,
        ref: int = ua.ObjectIds.HasComponent,
    ) -> ua.NodeId:
        """An object ``ident`` (string NodeId in ``ns``), child of ``parent`` by ``ref``."""
        nodeid = node_id(ident, self.ns)
        attrs = ua.ObjectAttributes()
        attrs.EventNotifier = 0
        typedef = typedef or node_id(ua.ObjectIds.BaseObjectType)
        self._item(parent, nodeid, bname, ua.NodeClass.Object, ref, typedef, attrs)
        return nodeid

    def _variable(
        self,
        parent: ua.NodeId,
        bname: ua.QualifiedName,
        value: object,
        vt: ua.VariantType,
        dtype: ua.NodeId | None,
        ref: int,
        typedef: int,
    ) -> ua.NodeId:
        self._auto += 1
        ident = f"{parent.Identifier}.{bname.Name}" if isinstance(parent.Identifier, str) else f"v{self._auto}"
        nodeid = node_id(ident, self.ns)
        attrs = ua.VariableAttributes()
        attrs.DataType = dtype or node_id(vt.value)
        attrs.Value = ua.Variant(value, vt)
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
        attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        self._item(parent, nodeid, bname, ua.NodeClass.Variable, ref, node_id(typedef), attrs)
        return nodeid

    def var(
        self,
        parent: ua.NodeId,
        bname: ua.QualifiedName,
        value: object,
        vt: ua.VariantType,
        dtype: ua.NodeId | None = None,
    ) -> ua.NodeId:
        """A BaseDataVariable component of ``parent``, read-only to clients."""
        return self._variable(
            parent, bname, value, vt, dtype, ua.ObjectIds.HasComponent, ua.ObjectIds.BaseDataVariableType
        )

    def prop(
        self,
        parent: ua.NodeId,
        bname: ua.QualifiedName,
        value: object,
        vt: ua.VariantType,
        dtype: ua.NodeId | None = None,
        typedef: int = ua.ObjectIds.PropertyType,
    ) -> ua.NodeId:
        """A property of ``parent`` (or, with another ``typedef``, a component of that type)."""
        ref = ua.ObjectIds.HasProperty if typedef == ua.ObjectIds.PropertyType else ua.ObjectIds.HasComponent
        return self._variable(parent, bname, value, vt, dtype, ref, typedef)

    async def commit(self, server: Server) -> None:
        """Add the collected nodes, parents first, and forget them."""
        # asyncua checks every new child against all references of its parent (BrowseName
        # and duplicate-reference scans), so a folder with one child per robot costs
        # O(robots^2): 6 s for 1,000 robots, 47 s for 4,000. The batch's node ids are
        # unique by construction, so the children of wide parents are held aside while
        # their siblings are added and appended afterwards, after the parent's own references.
        aspace = server.iserver.aspace
        session = server.iserver.isession
        fanout = Counter(item.ParentNodeId for item in self.items)
        wide = {parent for parent, n in fanout.items() if n > WIDE_PARENT}
        own: dict[ua.NodeId, list[ua.ReferenceDescription]] = {}
        held: dict[ua.NodeId, list[ua.ReferenceDescription]] = {}
        try:
            for item in self.items:
                parent = item.ParentNodeId
                data = aspace.get(parent) if parent in wide else None
                if data is not None:
                    if parent not in own:
                        own[parent], held[parent] = data.references, []
                    data.references = list(own[parent])
                (result,) = await session.add_nodes([item])
                if data is not None:
                    held[parent] += data.references[len(own[parent]) :]
                if not result.StatusCode.is_good():
                    raise RuntimeError(
                        f"could not add {item.BrowseName.to_string()} under {item.ParentNodeId}: {result.StatusCode}"
                    )
        finally:
            for parent, refs in own.items():
                aspace[parent].references = refs + held[parent]
        self.items = []

    async def add_references(self, server: Server, refs: list[tuple[ua.NodeId, ua.NodeId, ua.NodeId]]) -> None:
        """Add forward references ``(source, reference type, target object)`` in one call."""
        items = []
        for source, reftype, target in refs:
            item = ua.AddReferencesItem()
            item.SourceNodeId, item.TargetNodeId = source, target
            item.ReferenceTypeId = reftype
            item.IsForward = True
            item.TargetNodeClass = ua.NodeClass.Object
            items.append(item)
        for status in await server.iserver.isession.add_references(items):
            status.check()


def sanitise(text: str) -> str:
    """``text`` made safe for a string NodeId part: anything but ``A-Za-z0-9_.-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)
