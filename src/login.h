/*
 * login: who a peer is (see login.c). ZAP decisions are wired by
 * host_start_zap (host.h); a HELLO arrives here from dispatch_events.
 */
#ifndef PSEUD_LOGIN_H
#define PSEUD_LOGIN_H

#include "endpoint.h"

/* endpoint_events_t.on_hello of a server: the backend's handle_hello, or a
 * password check on the passwd pool; answered AUTHENTICATED/UNAUTHORIZED. */
void login_on_hello(void *ctx, endpoint_t *ep, const frame_message_t *m);

#endif
