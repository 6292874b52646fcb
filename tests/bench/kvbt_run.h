/* SPDX-License-Identifier: MIT */
/* The bench tests' way to run a command and keep what it printed. */
#pragma once

/* Runs cmd (a shell command line) through popen; its exit status (128 when
 * it did not exit), everything it wrote on stdout in *out (malloc'd; NULL
 * out: dropped). */
int kvbt_run(const char *cmd, char **out);
