"""The `rag` command line, and the local stack's supervisor (`rag up`)."""

import os

# `rag up` (and `rag ingest`'s helpers) spawn children while gRPC is live in this process. With
# gRPC's fork support on, a forked child restarts gRPC's poller between fork and exec, after
# subprocess has closed the poller's epoll fd: the child aborts (SIGABRT, "epoll_wait error: Bad
# file descriptor") before it becomes the service (grpc/grpc#43157). Seen once as "llm_gateway
# exited with code -6 while starting". No process here uses gRPC across a fork (children exec; the
# merge pool uses spawn), so fork support is off, for this process and, by inheritance, every child.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
