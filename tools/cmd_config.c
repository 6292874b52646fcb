/* SPDX-License-Identifier: MIT */
/* kvwire config: the configuration table with defaults, current values
 * (KVW_* environment applied) and help. Exit 3 when the environment holds
 * a value the library refuses. */
#include "cli.h"
#include "kvwire/kvwire.h"
#include "kvw_int.h"

#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void cfg_env_name(const char *name, char *out, size_t len)
{
	size_t i = snprintf(out, len, "KVW_");
	for (const char *p = name; *p && i + 1 < len; p++)
		out[i++] = (char)toupper((unsigned char)*p);
	out[i] = 0;
}

static void cfg_human_row(const json_t *e)
{
	const char *cur = cli_jstr(e, "current");
	char shown[64];
	snprintf(shown, sizeof(shown), "%s%s", cur, *cli_jstr(e, "env") ? " *" : "");
	printf("%-20s %-14s %-22s %s\n", cli_jstr(e, "name"), cli_jstr(e, "default"), shown,
	       cli_jstr(e, "help"));
}

/* Grouped by owner (the core, then each built driver), in table order. */
static void cfg_human(const json_t *doc)
{
	const json_t *e;
	const char *owner = "";
	size_t i;
	printf("%-20s %-14s %-22s %s\n", "NAME", "DEFAULT", "CURRENT", "HELP");
	json_array_foreach(json_object_get(doc, "options"), i, e) {
		if (strcmp(owner, cli_jstr(e, "owner"))) {
			owner = cli_jstr(e, "owner");
			if (!strcmp(owner, "core"))
				printf("# core\n");
			else
				printf("\n# %s driver (drivers/%s)\n", owner, owner);
		}
		cfg_human_row(e);
	}
	printf("\n* = set by the environment variable KVW_<NAME>\n");
}

static int cfg_usage(FILE *f, int rc)
{
	fprintf(f, "usage: kvwire config [--json]\n"
		"Prints every option, grouped by owner (the core, then each built driver):\n"
		"name, default, current value (KVW_<NAME> applied), help.\n");
	return rc;
}

int cmd_config(int argc, char **argv)
{
	bool as_json = false;
	int orc = cli_opts_json_only(argc, argv, &as_json, cfg_usage);
	if (orc >= 0)
		return orc;
	if (optind != argc)
		return cfg_usage(stderr, CLI_EXIT_USAGE);
	kvw_config *cfg = NULL;
	kvw_status st = kvw_config_create(&cfg);
	if (st != KVW_OK)
		return cli_err("config", CLI_EXIT_ERROR, "the KVW_* environment holds a value the "
			       "library refuses (%s); fix or unset it", kvw_strerror(st));
	const kvw_config_entry *tab;
	const char *const *owner;
	size_t n = kvw_config_table(&tab);
	kvw_cfg_all(NULL, &owner);
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++) {
		char env[64], cur[1024];
		cfg_env_name(tab[i].name, env, sizeof(env));
		if (kvw_config_get(cfg, tab[i].name, cur, sizeof(cur)) != KVW_OK)
			cur[0] = 0;
		if (!strcmp(tab[i].name, "secret") && cur[0]) /* never print the secret */
			snprintf(cur, sizeof(cur), "(set)");
		json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "name", tab[i].name,
			"owner", owner[i],
			"default", tab[i].default_value ? tab[i].default_value : "", "current", cur,
			"env", getenv(env) ? env : "", "help", tab[i].help ? tab[i].help : ""));
	}
	kvw_config_destroy(cfg);
	return cli_emit(json_pack("{s:o}", "options", arr), as_json, cfg_human, CLI_EXIT_OK);
}
