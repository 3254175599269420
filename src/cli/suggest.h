/* suggest.h: "did you mean" for a mistyped command or long option, and the one error line every command
 * prints for an option getopt_long refused.
 * defines: husai_edit_distance, husai_suggest, husai_cli_option_error */
#ifndef HUSAI_CLI_SUGGEST_H
#define HUSAI_CLI_SUGGEST_H

#include <getopt.h>

/* Edits (insert, delete, substitute, swap two neighbours) that turn a into b; values above 99 are
 * reported as 99 (only small distances matter). */
int husai_edit_distance(const char *a, const char *b);

/* The candidate closest to word if it is close enough to be a typo (at most 1 edit for words of up to 4
 * characters, else 2, and fewer edits than the word has characters); NULL if none or a tie. */
const char *husai_suggest(const char *word, const char *const *candidates, int n);

/* Prints the one stderr line for the option getopt_long just refused (argv[optind - 1] or optopt; opterr
 * must be 0): an unknown option with the closest long option as a suggestion, an ambiguous abbreviation
 * with its candidates, an option missing its value or given one it does not take:
 *   husai: error: sweep: unknown option '--sed' (did you mean '--set'?) (see husai sweep --help) */
void husai_cli_option_error(const char *cmd, char *const *argv, const char *shortopts,
                            const struct option *longopts);

#endif
