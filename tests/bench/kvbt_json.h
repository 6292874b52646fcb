/* SPDX-License-Identifier: MIT */
/* The bench tests' checked reads of the bench's JSON reports. */
#pragma once

#include <criterion/criterion.h>
#include <jansson.h>

/* j's member k, which must be an integer / a string (else the test fails). */
static inline json_int_t geti(json_t *j, const char *k)
{
	json_t *v = json_object_get(j, k);
	cr_assert(json_is_integer(v), "no integer \"%s\"", k);
	return json_integer_value(v);
}

static inline const char *gets(json_t *j, const char *k)
{
	json_t *v = json_object_get(j, k);
	cr_assert(json_is_string(v), "no string \"%s\"", k);
	return json_string_value(v);
}
