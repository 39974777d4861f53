"""gRPC plumbing shared by every service: handler wrappers, server start-up and drain, client channels."""
