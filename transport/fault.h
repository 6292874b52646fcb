/* SPDX-License-Identifier: MIT */
/* Fault injection: seeded drop / duplicate / reorder / delay / corrupt of
 * frames, by rate, applied below the core on packet drivers (dpdk) and on
 * any driver's frames where it can be. Spec string (config `fault`, bench
 * --fault): "drop=0.05,dup=0.01,reorder=0.02,delay=200us,corrupt=0.001,seed=7". */
#ifndef KVW_FAULT_H
#define KVW_FAULT_H
#include "kvw_int.h"
struct kvw_fault;
/* Parses spec; *out NULL when spec is empty. */
kvw_status kvw_fault_create(const char *spec, struct kvw_fault **out, char *err, size_t errlen);
void kvw_fault_destroy(struct kvw_fault *f);
