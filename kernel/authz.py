"""Who may call which gRPC method: the peer's certificate names a service, and each service may
call only what it needs.

With mutual TLS on (kernel/tls.py) every service presents its own certificate
(k8s/components/mtls issues one per service). Its DNS subject alternative names say who it is:
the first label of a name such as `retriever.ddnrag.svc.cluster.local` or
`retriever-headless...`, or the last path segment of a SPIFFE URI. `POLICY` lists the methods each
identity may call; anything else is PERMISSION_DENIED, and so is a certificate that names no
known identity. So the retriever, which parses untrusted files, can read and write objects but
cannot add backends or run benchmarks; only the gateway and an operator can.

Everyone with a certificate from the CA may call the health service. Reflection is for operators
(grpcurl), and `DDNRAG_GRPC_REFLECTION=false` removes it altogether (the oci overlay does).

Without mTLS there is no identity to check and this interceptor lets every call through: any pod
that can reach a service's port can call any of its methods (k8s/README.md says so, and what the
NetworkPolicies limit).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from .config import env_field

log = logging.getLogger(__name__)

STORAGE = "ddnrag.storage.v1.StorageService/"
RETRIEVER = "ddnrag.retriever.v1.RetrieverService/"
LLM = "ddnrag.llm.v1.LlmService/"
AB = "ddnrag.llm.v1.AbTestService/"
EMBEDDER = "ddnrag.embedder.v1.EmbedderService/"
HEALTH = "grpc.health.v1.Health/"
REFLECTION = ("grpc.reflection.v1alpha.ServerReflection/", "grpc.reflection.v1.ServerReflection/")

OBJECTS = tuple(STORAGE + m for m in ("Get", "BatchGet", "Head", "List", "Put", "BatchPut", "Delete", "Copy"))
EMBED = tuple(EMBEDDER + m for m in ("Embed", "EmbedStream", "Info"))

# identity -> the full method names (or "<service>/" prefixes) it may call.
POLICY: dict[str, tuple[str, ...]] = {
    # The gateway fronts every HTTP route (its own roles decide who may ask it what).
    "gateway": (STORAGE, RETRIEVER, LLM, AB, EMBEDDER),
    # The retriever parses untrusted files: objects and embeddings, never backends or benchmarks.
    "retriever": (*OBJECTS, STORAGE + "ListBackends", *EMBED),
    # The llm_gateway retrieves, embeds (verification) and keeps conversations as objects; its
    # A/B runs read the backends' descriptions to label them (emulated or not).
    "llm-gateway": (RETRIEVER + "Search", RETRIEVER + "ListCollections", *EMBED, *OBJECTS, STORAGE + "ListBackends"),
    # The embedder calls no one; storage calls no one.
    "embedder": (),
    "storage": (),
    # A person's certificate (`rag` against a cluster, the benchmarks): everything, reflection too.
    "operator": (STORAGE, RETRIEVER, LLM, AB, EMBEDDER, *REFLECTION),
}


@dataclass(frozen=True)
class GrpcExposureConfig:
    """What a gRPC server exposes besides its services (shared by every service)."""

    reflection: bool = env_field(
        "DDNRAG_GRPC_REFLECTION", True, "serve gRPC reflection (grpcurl); the oci overlay turns it off"
    )


def identities(auth_context: dict[str, Iterable[bytes]]) -> set[str]:
    """The known identities the peer's certificate names (empty without a certificate)."""
    out = set()
    for raw in auth_context.get("x509_subject_alternative_name", ()):
        name = raw.decode(errors="replace").strip().lower()
        label = name.rsplit("/", 1)[-1] if name.startswith("spiffe://") else name.split(".", 1)[0]
        label = label.removesuffix("-headless")
        if label in POLICY:
            out.add(label)
    return out


def allowed(who: set[str], method: str) -> bool:
    """Whether any of `who` may call `method` (e.g. "/ddnrag.storage.v1.StorageService/Put")."""
    name = method.lstrip("/")
    if name.startswith(HEALTH):
        return True
    return any(name == rule or (rule.endswith("/") and name.startswith(rule)) for w in who for rule in POLICY[w])


Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


class AuthzInterceptor(grpc.aio.ServerInterceptor):
    """PERMISSION_DENIED for a method the peer's identity may not call (mTLS only)."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        async def check(context: grpc.aio.ServicerContext) -> None:
            auth = context.auth_context()
            if auth.get("transport_security_type", [b""])[0] != b"ssl":
                return  # plaintext: nothing to check (see the module docstring)
            who = identities(auth)
            if not allowed(who, method):
                log.warning("call refused", extra={"method": method, "peer": sorted(who) or ["unknown"]})
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the certificate of {', '.join(sorted(who)) or 'this peer'} may not call {method}; "
                    "each service has its own certificate and may call only what it needs (kernel/authz.py)",
                )

        return wrap(handler, check)


def wrap(handler: grpc.RpcMethodHandler, check: Check) -> grpc.RpcMethodHandler:
    """`handler` with `check(context)` awaited before it runs, for all four RPC kinds."""
    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await inner(request, context)

        factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return factory(unary, **kw)
    inner_stream = handler.unary_stream or handler.stream_stream

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        async for item in inner_stream(request, context):
            yield item

    factory = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return factory(streaming, **kw)
