"""``shoal gateway``: a local FaaS emulator. An HTTP server (:mod:`.server`) that keeps
pools of worker processes (:mod:`.process`) per size, placed by the pure decisions of
:mod:`.policy`."""
