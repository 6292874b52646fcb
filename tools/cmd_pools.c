/* SPDX-License-Identifier: MIT */
/* kvwire pools: what the optional fleet directory on etcd holds
 * (libkvwire-dir). Exit 1 when the directory cannot be reached. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KVW_CLI_HAVE_DIR
#include "kvwire/dir.h"

#define POOLS_MAX 4096

static void pools_human(const json_t *doc)
{
	const json_t *e, *u;
	size_t i, j;
	printf("%-16s %-8s %-20s %10s  %s\n", "POOL", "ROLE", "NAME", "CAPACITY", "URIS / GEOMETRY");
	json_array_foreach(json_object_get(doc, "entries"), i, e) {
		printf("%-16s %-8s %-20s %10lld ", cli_jsafe(e, "pool"), cli_jsafe(e, "role"), cli_jsafe(e, "name"),
		       cli_jint(e, "capacity"));
		json_array_foreach(json_object_get(e, "uris"), j, u)
			printf(" %s", cli_safe(json_string_value(u)));
		printf("\n%58s%s\n", "", cli_jsafe(e, "geometry"));
	}
	if (json_array_size(json_object_get(doc, "entries")) == 0)
		printf("(no instances%s%s)\n", *cli_jstr(doc, "pool") ? " in pool " : "", cli_jsafe(doc, "pool"));
	if (cli_jint(doc, "skipped"))
		printf("\n%lld value(s) skipped: %s\n", cli_jint(doc, "skipped"), cli_jsafe(doc, "skipped_why"));
}

static json_t *pools_entry_json(const kvw_dir_entry *e)
{
	json_t *uris = json_array();
	for (uint32_t i = 0; i < e->n_uris; i++)
		json_array_append_new(uris, cli_jtext(e->uris[i]));
	return json_pack("{s:o,s:s,s:o,s:o,s:o,s:I,s:I}", "pool", cli_jtext(e->pool), "role",
			 e->role == KVW_DIR_PREFILL ? "prefill" : "decode", "name", cli_jtext(e->name), "uris", uris,
			 "geometry", cli_jtext(e->geometry), "capacity", (json_int_t)e->capacity, "revision",
			 (json_int_t)e->revision);
}

static int pools_run(const char *eps, const kvw_dir_opts *o, const char *pool, kvw_dir_role role,
		     bool as_json)
{
	kvw_dir *d;
	kvw_status st = kvw_dir_open(eps, o, &d);
	if (st != KVW_OK)
		return cli_err("pools", st == KVW_ERR_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_FAIL, "%s",
			       cli_safe(kvw_dir_last_error(NULL)));
	kvw_dir_entry *v = calloc(POOLS_MAX, sizeof(*v));
	size_t n = 0, bad = 0;
	if (!v) {
		kvw_dir_close(d);
		return cli_err("pools", CLI_EXIT_ERROR, "out of memory");
	}
	v[0].size = sizeof(*v);
	st = kvw_dir_list(d, pool, role, v, POOLS_MAX, &n, &bad);
	if (st != KVW_OK) {
		int rc = cli_err("pools", st == KVW_ERR_NOMEM ? CLI_EXIT_ERROR : CLI_EXIT_FAIL, "%s",
				 cli_safe(kvw_dir_last_error(d)));
		free(v);
		kvw_dir_close(d);
		return rc;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, pools_entry_json(&v[i]));
	json_t *doc = json_pack("{s:o,s:s,s:o,s:I,s:o}", "endpoints", cli_jtext(eps), "pool", pool ? pool : "",
				"entries", arr, "skipped", (json_int_t)bad, "skipped_why",
				cli_jtext(bad ? kvw_dir_last_error(d) : ""));
	free(v);
	kvw_dir_close(d);
	return cli_emit(doc, as_json, pools_human, CLI_EXIT_OK);
}
#endif

static int pools_usage(FILE *f, int rc)
{
	fprintf(f, "usage: kvwire pools [--endpoints URL[,URL...]] [--pool P] [--role prefill|decode]\n"
		"                    [--prefix /kvwire] [--user NAME] [--timeout MS] [--json]\n"
		"Lists the instances the fleet directory on etcd holds. Endpoints default to\n"
		"$KVW_DIR_ENDPOINTS, else http://127.0.0.1:2379; the password of --user comes from\n"
		"$KVW_DIR_PASSWORD; https endpoints take $KVW_DIR_CA, $KVW_DIR_CERT, $KVW_DIR_KEY.\n");
	return rc;
}

int cmd_pools(int argc, char **argv)
{
	static const struct option opts[] = {
		{"endpoints", required_argument, 0, 'e'}, {"pool", required_argument, 0, 'p'},
		{"role", required_argument, 0, 'r'}, {"prefix", required_argument, 0, 'x'},
		{"user", required_argument, 0, 'u'}, {"timeout", required_argument, 0, 't'},
		{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *eps = getenv("KVW_DIR_ENDPOINTS"), *pool = NULL, *role = NULL, *prefix = NULL, *user = NULL;
	long timeout = 2000;
	bool as_json = false;
	int c;
	while ((c = getopt_long(argc, argv, "e:p:r:x:u:t:jh", opts, NULL)) != -1) {
		switch (c) {
		case 'e': eps = optarg; break;
		case 'p': pool = optarg; break;
		case 'r': role = optarg; break;
		case 'x': prefix = optarg; break;
		case 'u': user = optarg; break;
		case 't': timeout = strtol(optarg, NULL, 10); break;
		case 'j': as_json = true; break;
		default: return pools_usage(c == 'h' ? stdout : stderr, c == 'h' ? CLI_EXIT_OK : CLI_EXIT_USAGE);
		}
	}
	if (optind != argc || timeout < 1 || timeout > 600000 ||
	    (role && strcmp(role, "prefill") && strcmp(role, "decode")))
		return pools_usage(stderr, CLI_EXIT_USAGE);
#ifdef KVW_CLI_HAVE_DIR
	kvw_dir_opts o = {.size = sizeof(o), .timeout_ms = (uint32_t)timeout, .prefix = prefix, .user = user,
			  .password = getenv("KVW_DIR_PASSWORD"), .ca_file = getenv("KVW_DIR_CA"),
			  .cert_file = getenv("KVW_DIR_CERT"), .key_file = getenv("KVW_DIR_KEY")};
	kvw_dir_role r = !role ? KVW_DIR_ANY : !strcmp(role, "prefill") ? KVW_DIR_PREFILL : KVW_DIR_DECODE;
	return pools_run(eps && *eps ? eps : "http://127.0.0.1:2379", &o, pool, r, as_json);
#else
	(void)as_json;
	(void)eps;
	(void)pool;
	(void)prefix;
	(void)user;
	return cli_err("pools", CLI_EXIT_ERROR, "this kvwire was built without libkvwire-dir (libcurl was not "
		       "found): install libcurl4-openssl-dev and rebuild");
#endif
}
