/* SPDX-License-Identifier: MIT */
/* transport/fault.c: spec parsing, seeded determinism, rates, hold queue,
 * the view from above a reliable transport. */
#include "fault.h"

#include <criterion/criterion.h>
#include <string.h>

static struct kvw_fault *mk(const char *spec)
{
	struct kvw_fault *f = NULL;
	char err[200];
	kvw_status st = kvw_fault_create(spec, &f, err, sizeof(err));
	cr_assert_eq(st, KVW_OK, "%s: %s", spec, err);
	return f;
}

Test(fault, empty_spec_is_off)
{
	struct kvw_fault *f = (struct kvw_fault *)1;
	char err[64];
	cr_assert_eq(kvw_fault_create("", &f, err, sizeof(err)), KVW_OK);
	cr_assert_null(f);
}

Test(fault, parses_the_documented_example)
{
	struct kvw_fault_spec s;
	char err[128];
	cr_assert_eq(kvw_fault_parse("drop=0.05,dup=0.01,reorder=0.02,delay=200us,corrupt=0.001,seed=7",
				     &s, err, sizeof(err)), KVW_OK, "%s", err);
	cr_assert_float_eq(s.drop, 0.05, 1e-12);
	cr_assert_float_eq(s.dup, 0.01, 1e-12);
	cr_assert_float_eq(s.reorder, 0.02, 1e-12);
	cr_assert_float_eq(s.corrupt, 0.001, 1e-12);
	cr_assert_eq(s.delay_ns, 200000u);
	cr_assert_eq(s.seed, 7u);
}

Test(fault, rejects_bad_specs_with_a_reason)
{
	const char *bad[] = { "drop", "drop=2", "drop=-0.1", "delay=5parsecs", "bogus=1",
			      "seed=x", "drop=0.1,,dup=abc" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct kvw_fault *f = NULL;
		char err[200] = "";
		cr_expect_eq(kvw_fault_create(bad[i], &f, err, sizeof(err)), KVW_ERR_INVALID, "%s", bad[i]);
		cr_expect_null(f);
		cr_expect_gt(strlen(err), 10u, "no reason for %s", bad[i]);
	}
}

Test(fault, same_seed_same_decisions)
{
	struct kvw_fault *a = mk("drop=0.3,dup=0.2,reorder=0.1,corrupt=0.1,seed=42");
	struct kvw_fault *b = mk("drop=0.3,dup=0.2,reorder=0.1,corrupt=0.1,seed=42");
	struct kvw_fault *c = mk("drop=0.3,dup=0.2,reorder=0.1,corrupt=0.1,seed=43");
	int differ = 0;
	for (int i = 0; i < 1000; i++) {
		struct kvw_fault_action x, y, z;
		kvw_fault_decide(a, 1500, 14, &x);
		kvw_fault_decide(b, 1500, 14, &y);
		kvw_fault_decide(c, 1500, 14, &z);
		cr_assert_eq(x.copies, y.copies);
		cr_assert_eq(x.hold_ns, y.hold_ns);
		cr_assert_eq(x.corrupt, y.corrupt);
		cr_assert_eq(x.corrupt_off, y.corrupt_off);
		differ += x.copies != z.copies;
	}
	cr_assert_gt(differ, 0, "another seed gave the very same run");
	kvw_fault_destroy(a);
	kvw_fault_destroy(b);
	kvw_fault_destroy(c);
}

Test(fault, rates_are_close_and_corruption_stays_in_range)
{
	struct kvw_fault *f = mk("drop=0.05,dup=0.02,corrupt=0.01,seed=9");
	unsigned drop = 0, dup = 0, cor = 0, n = 200000;
	for (unsigned i = 0; i < n; i++) {
		struct kvw_fault_action a;
		kvw_fault_decide(f, 100, 40, &a);
		drop += a.copies == 0;
		dup += a.copies == 2;
		if (a.corrupt) {
			cor++;
			cr_assert(a.corrupt_off >= 40 && a.corrupt_off < 100 && a.corrupt_bit < 8);
		}
	}
	cr_expect(drop > n * 0.045 && drop < n * 0.055, "drop %u", drop);
	cr_expect(dup > n * 0.95 * 0.017 && dup < n * 0.95 * 0.023, "dup %u", dup);
	cr_expect(cor > n * 0.95 * 0.008 && cor < n * 0.95 * 0.012, "corrupt %u", cor);
	struct kvw_fault_stats st;
	kvw_fault_get_stats(f, &st);
	cr_expect_eq(st.frames, n);
	cr_expect_eq(st.dropped, drop);
	kvw_fault_destroy(f);
}

Test(fault, hold_queue_releases_in_due_order)
{
	struct kvw_fault *f = mk("delay=100us,seed=1");
	int a = 1, b = 2, c = 3;
	cr_assert(kvw_fault_hold(f, &a, 1000, 300));
	cr_assert(kvw_fault_hold(f, &b, 1000, 100));
	cr_assert(kvw_fault_hold(f, &c, 1000, 200));
	cr_assert_null(kvw_fault_due(f, 1050));
	cr_assert_eq(kvw_fault_due(f, 1250), &b);
	cr_assert_eq(kvw_fault_due(f, 1250), &c);
	cr_assert_null(kvw_fault_due(f, 1250));
	cr_assert_eq(kvw_fault_held(f), 1u);
	cr_assert_eq(kvw_fault_drain(f), &a);
	cr_assert_null(kvw_fault_drain(f));
	kvw_fault_destroy(f);
}

/* Below a reliable transport (tcp, shm, rdma): a loss or a corruption is a
 * resend after rto, a duplicate only a count, reorder/delay a hold. */
Test(fault, reliable_transport_view)
{
	kvw_counters c = {.size = sizeof(c)};
	struct kvw_fault *f = mk("drop=1,rto=5ms,seed=3");
	memset(&c, 0, sizeof(c));
	cr_assert_eq(kvw_fault_reliable(f, 100, &c), 5000000ull);
	cr_assert(c.drops == 1 && c.retransmits == 1 && c.dups == 0);
	kvw_fault_destroy(f);

	f = mk("corrupt=1,seed=3"); /* default rto 1 ms */
	cr_assert_eq(kvw_fault_reliable(f, 100, &c), 1000000ull);
	cr_assert(c.drops == 2 && c.retransmits == 2);
	kvw_fault_destroy(f);

	f = mk("dup=1,seed=3");
	cr_assert_eq(kvw_fault_reliable(f, 100, &c), 0);
	cr_assert(c.dups == 1 && c.retransmits == 2);
	kvw_fault_destroy(f);

	f = mk("reorder=1,reorder_delay=70us,seed=3");
	cr_assert_eq(kvw_fault_reliable(f, 100, &c), 70000ull);
	cr_assert_eq(c.out_of_order, 1);
	kvw_fault_destroy(f);

	f = mk("delay=300us,seed=3");
	cr_assert_eq(kvw_fault_reliable(f, 100, &c), 300000ull);
	cr_assert_eq(c.out_of_order, 1);
	kvw_fault_destroy(f);
}
