"""Which conversations a user may read or acknowledge, and whom each one's delivery log is kept for.

One rule for history reads, acknowledgements and a stream's catch-up: a 1:1 conversation of the
user's, a group they are a member of, their own inbox.
"""

from __future__ import annotations

import grpc

from services.gateway.groups import GroupDirectory
from spartan import naming
from spartan.errors import InvalidArgument, PermissionDenied
from spartan.v1 import pb
from spartan.validation import check_user


class ConversationAccess:
    def __init__(self, users: frozenset[str], groups: GroupDirectory) -> None:
        self.users = users
        self.groups = groups

    async def members(self, user: str, conversation: str) -> list[str]:
        """Who the delivery log of `conversation` is kept for; [] when `user` is no longer part of it."""
        if naming.inbox_owner(conversation) is not None:
            if conversation != naming.inbox_conversation(user):
                raise PermissionDenied("only your own inbox can be read or acknowledged")
            return [user]
        try:
            await self.readable(user, pb.HistoryRequest(conversation=conversation))
        except PermissionDenied:
            if naming.group_name(conversation) is None:
                raise
            return []  # removed from the group: nothing of it is theirs any more
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return []  # the group is gone
        members = naming.dm_members(conversation)
        if members is not None:
            return list(members)
        return list((await self.groups.require_member(naming.group_name(conversation) or "", user)).members)

    async def readable(self, user: str, request: pb.HistoryRequest) -> str:
        chosen = [value for value in (request.conversation, request.peer, request.group) if value]
        if len(chosen) != 1:
            raise InvalidArgument("name exactly one of conversation, peer or group")
        if request.peer:
            return naming.dm_conversation(user, check_user(request.peer, self.users, "peer"))
        if request.group:
            await self.groups.require_member(request.group, user)
            return naming.group_conversation(request.group)
        members = naming.dm_members(request.conversation)
        if members is not None:
            if user not in members:
                raise PermissionDenied("you are not part of that conversation")
            for member in members:
                check_user(member, self.users)
            return request.conversation
        group = naming.group_name(request.conversation)
        if group is None:
            raise InvalidArgument(f"'{request.conversation[:64]}' is not a conversation id (dm:a:b or group:name)")
        await self.groups.require_member(group, user)
        return request.conversation
