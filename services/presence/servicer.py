"""The Presence gRPC service: leases, chat requests and the public-key directory.

Gateways call it; it is never exposed to clients, and answers only calls signed with
the service secret (`spartan.rpc.service_auth`). Chat requests are kept as pending
requests (listed at start-up), and every request, accept and decline is a control
message in the delivery log of the recipient's inbox, published on their channel:
an online user sees it at once, an offline one when they connect.
"""

from __future__ import annotations

import uuid

import grpc

from services.presence.groups import GroupStore
from services.presence.store import PresenceStore
from spartan.config import Config
from spartan.crypto.identity import verify_prekey
from spartan.delivery_log import DeliveryLog
from spartan.enrolment import EnrolmentCodes
from spartan.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from spartan.naming import inbox_conversation
from spartan.rpc.handlers import unary
from spartan.v1 import pb, rpc
from spartan.validation import check_user

SERVICE = "presence"


class PresenceServicer(rpc.PresenceServicer):
    def __init__(
        self, config: Config, store: PresenceStore, groups: GroupStore, log: DeliveryLog, enrolment: EnrolmentCodes
    ) -> None:
        self.config = config
        self.enrolment = enrolment
        self.log = log
        self.users = frozenset(config.users)
        self.store = store
        self.groups = groups

    @unary(SERVICE)
    async def Connect(self, request: pb.Lease, context: grpc.aio.ServicerContext) -> pb.LeaseAck:
        check_user(request.user, self.users)
        await self.store.renew([request], request.ttl_seconds or self.config.presence.lease_seconds)
        return pb.LeaseAck()

    @unary(SERVICE)
    async def Renew(self, request: pb.LeaseBatch, context: grpc.aio.ServicerContext) -> pb.LeaseAck:
        ttl = max((lease.ttl_seconds for lease in request.leases), default=0) or self.config.presence.lease_seconds
        await self.store.renew(request.leases, ttl)
        return pb.LeaseAck()

    @unary(SERVICE)
    async def Disconnect(self, request: pb.Lease, context: grpc.aio.ServicerContext) -> pb.LeaseAck:
        await self.store.drop(request)
        return pb.LeaseAck()

    @unary(SERVICE)
    async def ListUsers(self, request: pb.UserRef, context: grpc.aio.ServicerContext) -> pb.ListUsersResponse:
        online = await self.store.online_users()
        groups = await self.groups.groups_of(request.user) if request.user else []
        return pb.ListUsersResponse(
            users=[pb.UserStatus(name=user, online=user in online) for user in self.config.users],
            groups=groups,
        )

    @unary(SERVICE)
    async def GroupsOf(self, request: pb.UserRef, context: grpc.aio.ServicerContext) -> pb.GroupNames:
        return pb.GroupNames(groups=await self.groups.groups_of(check_user(request.user, self.users)))

    @unary(SERVICE)
    async def RequestChat(self, request: pb.RequestRef, context: grpc.aio.ServicerContext) -> pb.ChatRequestAck:
        requester = check_user(request.from_user, self.users)
        recipient = check_user(request.to_user, self.users, "peer")
        if requester == recipient:
            raise InvalidArgument("you cannot start a chat with yourself")
        message_id = uuid.uuid4().hex
        await self.store.add_request(requester, recipient, message_id)
        await self._deliver(_control(pb.CHAT_REQUEST, message_id, requester, recipient))
        return pb.ChatRequestAck(peer_online=recipient in await self.store.online_users())

    @unary(SERVICE)
    async def RespondChat(self, request: pb.RequestRef, context: grpc.aio.ServicerContext) -> pb.ChatRequestAck:
        responder = check_user(request.from_user, self.users)
        requester = check_user(request.to_user, self.users, "peer")
        if not await self.store.take_request(requester, responder):
            raise FailedPrecondition(f"there is no pending chat request from {requester}")
        kind = pb.CHAT_ACCEPT if request.accept else pb.CHAT_DECLINE
        await self._deliver(_control(kind, uuid.uuid4().hex, responder, requester))
        return pb.ChatRequestAck(peer_online=requester in await self.store.online_users())

    async def _deliver(self, message: pb.Message) -> None:
        await self.log.append_message(inbox_conversation(message.recipient), message)

    @unary(SERVICE)
    async def PendingRequests(
        self, request: pb.UserRef, context: grpc.aio.ServicerContext
    ) -> pb.PendingRequestsResponse:
        user = check_user(request.user, self.users)
        return pb.PendingRequestsResponse(requesters=await self.store.pending_requests(user))

    @unary(SERVICE)
    async def PutKeys(self, request: pb.PublicKeys, context: grpc.aio.ServicerContext) -> pb.PublicKeys:
        check_user(request.user, self.users)
        registered = await self.store.put_keys(request)
        if registered.identity_key != request.identity_key or registered.agreement_key != request.agreement_key:
            raise AlreadyExists(
                f"{request.user} already has different keys registered; if they were lost, an operator can reset "
                f"them with: spartan-admin reset-keys {request.user}"
            )
        return registered

    @unary(SERVICE)
    async def GetKeys(self, request: pb.UserRef, context: grpc.aio.ServicerContext) -> pb.PublicKeys:
        user = check_user(request.user, self.users)
        keys = await self.store.get_keys(user)
        if keys is None:
            raise NotFound(f"{user} has not registered keys yet (they have never logged in)")
        return keys

    @unary(SERVICE)
    async def PutPrekey(self, request: pb.PublicKeys, context: grpc.aio.ServicerContext) -> pb.PrekeyAck:
        """Replace a user's prekey once its signature checks against the registered identity key."""
        user = check_user(request.user, self.users)
        keys = await self.store.get_keys(user)
        if keys is None:
            raise NotFound(f"{user} has not registered keys yet, so no prekey of theirs can be checked")
        if not request.HasField("prekey"):
            raise InvalidArgument("PutPrekey needs a prekey")
        verify_prekey(request.prekey, user=user, identity_key=keys.identity_key)
        return pb.PrekeyAck(first=await self.store.put_prekey(user, request.prekey))

    @unary(SERVICE)
    async def ResetKeys(self, request: pb.UserRef, context: grpc.aio.ServicerContext) -> pb.EnrolmentCode:
        """Forget the keys and issue a code: only its holder registers new keys (the window stays shut)."""
        user = check_user(request.user, self.users)
        if not await self.store.reset_keys(user):
            raise NotFound(f"{user} has no registered keys")
        return await self._issue(user, after_reset=True)

    @unary(SERVICE)
    async def IssueEnrolmentCode(self, request: pb.UserRef, context: grpc.aio.ServicerContext) -> pb.EnrolmentCode:
        user = check_user(request.user, self.users)
        if await self.store.get_keys(user) is not None:
            raise FailedPrecondition(
                f"{user} already has registered keys; to replace them: spartan-admin reset-keys {user}"
            )
        return await self._issue(user, after_reset=False)

    async def _issue(self, user: str, *, after_reset: bool) -> pb.EnrolmentCode:
        code, expires_at_us = await self.enrolment.issue(
            user, self.config.auth.enrolment_code_ttl_seconds, after_reset=after_reset
        )
        return pb.EnrolmentCode(user=user, code=code, expires_at_us=expires_at_us)

    @unary(SERVICE)
    async def GetGroup(self, request: pb.GroupRequest, context: grpc.aio.ServicerContext) -> pb.GroupInfo:
        return await self.groups.get(request.group)

    @unary(SERVICE)
    async def CreateGroup(self, request: pb.GroupRequest, context: grpc.aio.ServicerContext) -> pb.GroupInfo:
        return await self.groups.create(request.group, request.user, list(request.members), _change(request))

    @unary(SERVICE)
    async def AddMember(self, request: pb.GroupRequest, context: grpc.aio.ServicerContext) -> pb.GroupInfo:
        return await self.groups.add(request.group, actor=_actor(context), user=request.user, change=_change(request))

    @unary(SERVICE)
    async def RemoveMember(self, request: pb.GroupRequest, context: grpc.aio.ServicerContext) -> pb.GroupInfo:
        return await self.groups.remove(
            request.group, actor=_actor(context), user=request.user, change=_change(request)
        )


def _change(request: pb.GroupRequest) -> pb.MembershipRecord:
    """The change record the caller signed: members accept no change without one, so neither does presence."""
    if not request.HasField("change"):
        raise InvalidArgument(
            f"a change of {request.group or 'a group'} must carry its record signed by you; update your client"
        )
    return request.change


def _actor(context: grpc.aio.ServicerContext) -> str:
    """The user on whose behalf a gateway calls (`x-spartan-user` metadata, covered by the call's service
    credential, which `spartan.rpc.service_auth.CallerCheck` verified before this handler ran)."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-spartan-user":
            return str(value)
    raise InvalidArgument("missing acting user")


def _control(kind: pb.Kind, message_id: str, sender: str, recipient: str) -> pb.Message:
    return pb.Message(id=message_id, kind=kind, sender=sender, recipient=recipient)
