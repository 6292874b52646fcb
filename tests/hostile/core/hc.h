/* SPDX-License-Identifier: MIT */
/* What the core's hostile tests share: the victim's listener. */
#ifndef HC_H
#define HC_H
#include "kvwire/kvwire.h"
#include <stdint.h>

/* A context with cfg (name, value, ..., NULL) listening on the test driver;
 * skips the test on drivers without a raw stream socket. */
kvw_ctx *hc_victim(const char *const *cfg, kvw_listener **l);
/* In a forked victim: fd limit nofile, a listener whose URI is written to
 * out (256 bytes); _exit(2/3) when that fails. Returns the context. */
kvw_ctx *hc_child_victim(int out, unsigned nofile, const char *const *cfg, kvw_listener **l);
#endif
