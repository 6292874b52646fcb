/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <string.h>

#include "kvwire/kvwire.h"

static const struct { kvw_status st; const char *name; } all[] = {
	{ KVW_OK, "KVW_OK" },
	{ KVW_INPROGRESS, "KVW_INPROGRESS" },
	{ KVW_ERR_INVALID, "KVW_ERR_INVALID" },
	{ KVW_ERR_NOMEM, "KVW_ERR_NOMEM" },
	{ KVW_ERR_UNSUPPORTED, "KVW_ERR_UNSUPPORTED" },
	{ KVW_ERR_TIMEDOUT, "KVW_ERR_TIMEDOUT" },
	{ KVW_ERR_PEER_DEAD, "KVW_ERR_PEER_DEAD" },
	{ KVW_ERR_ABORTED, "KVW_ERR_ABORTED" },
	{ KVW_ERR_REJECTED, "KVW_ERR_REJECTED" },
	{ KVW_ERR_PROTO, "KVW_ERR_PROTO" },
	{ KVW_ERR_VERSION, "KVW_ERR_VERSION" },
	{ KVW_ERR_AUTH, "KVW_ERR_AUTH" },
	{ KVW_ERR_BUSY, "KVW_ERR_BUSY" },
	{ KVW_ERR_MEMLOCK, "KVW_ERR_MEMLOCK" },
	{ KVW_ERR_IO, "KVW_ERR_IO" },
	{ KVW_ERR_CONNREFUSED, "KVW_ERR_CONNREFUSED" },
	{ KVW_ERR_NOT_FOUND, "KVW_ERR_NOT_FOUND" },
	{ KVW_ERR_CLOSED, "KVW_ERR_CLOSED" },
};
#define N_ALL (sizeof(all) / sizeof(all[0]))

Test(status, every_status_has_its_name, .timeout = 10)
{
	for (size_t i = 0; i < N_ALL; i++) {
		const char *s = kvw_strerror(all[i].st);
		cr_assert_not_null(s, "%s", all[i].name);
		/* "KVW_ERR_TIMEDOUT: ..." -- the name, then a word boundary */
		size_t n = strlen(all[i].name);
		cr_assert_eq(strncmp(s, all[i].name, n), 0, "kvw_strerror(%d) = \"%s\"", all[i].st, s);
		cr_assert(s[n] == '\0' || s[n] == ':' || s[n] == ' ', "\"%s\"", s);
	}
}

Test(status, every_status_distinct, .timeout = 10)
{
	for (size_t i = 0; i < N_ALL; i++)
		for (size_t j = 0; j < i; j++)
			cr_assert_str_neq(kvw_strerror(all[i].st), kvw_strerror(all[j].st));
}

Test(status, errors_explain_themselves, .timeout = 10)
{
	for (size_t i = 2; i < N_ALL; i++)
		cr_assert_gt(strlen(kvw_strerror(all[i].st)), strlen(all[i].name) + 5,
			     "%s has no explanation", all[i].name);
	cr_assert_not_null(strstr(kvw_strerror(KVW_ERR_MEMLOCK), "ulimit -l"));
}

Test(status, unknown_values_do_not_crash, .timeout = 10)
{
	int odd[] = { 2, 42, -17, -100, -999, 1 << 30, -(1 << 30), -2147483647 - 1 };
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		const char *s = kvw_strerror((kvw_status)odd[i]);
		cr_assert_not_null(s);
		cr_assert_gt(strlen(s), 0);
		for (size_t j = 0; j < N_ALL; j++)
			cr_assert_str_neq(s, kvw_strerror(all[j].st), "%d named like %s", odd[i],
					  all[j].name);
	}
}

Test(status, drivers_built_names_shm_and_tcp, .timeout = 10)
{
	const char *d = kvw_drivers_built();
	cr_assert_not_null(d);
	cr_assert_not_null(strstr(d, "tcp"), "drivers built: %s", d);
}
