// recipe.h: `qlora train --recipe FILE`: a JSON object of option: value
// (docs/recipes.md) turned into "--option value" arguments that go before the
// command line's, so that the command line overrides them.
#ifndef QL_RECIPE_H
#define QL_RECIPE_H

#include <stddef.h>

#include "../common/cli.h"

// Parses a recipe's text js (len bytes; name for messages) against the
// command's options: each key names one of opts without its "--" ('_' may stand
// for '-'); a value is checked against the option's type (a string, an integer,
// a number, a boolean for a flag). Keys "_..." and "comment" are notes. Errors
// name the recipe and the key: "recipes/x.json: key 'batch_size': expected an
// integer, found \"4\"". "help" and "recipe" are refused. On success *argv_out
// holds *argc_out malloc'd strings (free with recipe_args_free).
int recipe_parse(const char *name, const char *js, size_t len, const cli_opt *opts, int nopts,
                 char ***argv_out, int *argc_out);
// The same for the file at path; *text_out receives its text (malloc'd), kept
// in the training record.
int recipe_args(const char *path, const cli_opt *opts, int nopts, char ***argv_out, int *argc_out, char **text_out);
void recipe_args_free(char **argv, int argc);

#endif
