/*
 * testing.h: hooks into the gRPC transport for its unit tests only, to play
 * a misbehaving peer.  Nothing outside tests/ includes this.
 */
#ifndef WF_GRPC_TESTING_H
#define WF_GRPC_TESTING_H

#include "grpc/grpc.h"

/* Queues bytes (copied) on the call exactly as given, without the gRPC
 * length prefix, so a test can send broken framing.  Returns 0 or -1. */
int wf__grpc_send_raw(wf_grpc_call *c, const uint8_t *bytes, size_t len);

/* Milliseconds a connection may take to connect and show its HTTP/2
 * SETTINGS (10000); tests shorten it. */
extern unsigned wf__grpc_handshake_ms;

#endif
