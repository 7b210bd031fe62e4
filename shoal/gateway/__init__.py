"""``shoal gateway``: a local FaaS emulator. An HTTP server (:mod:`.server`) that keeps
pools of worker processes (:mod:`.process`) per size, placed by the pure decisions of
:mod:`.policy`."""

#: The gateway's bearer token: its clients send it, the gateway requires it.
TOKEN_ENV = "SHOAL_GATEWAY_TOKEN"
