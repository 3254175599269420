/* "Did you mean" (src/cli/suggest.c): the edit distance against a naive recursive definition of the same
 * distance (optimal string alignment) on every pair of short strings over a small alphabet and on known
 * cases, and the suggestion rule: the closest name within 1 edit (short words) or 2, none on a tie or when
 * nothing is close. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "cli/suggest.h"

/* Optimal string alignment distance straight from its recursive definition (exponential; short strings). */
static int naive(const char *a, int n, const char *b, int m) {
    if (n == 0) return m;
    if (m == 0) return n;
    int best = naive(a, n - 1, b, m) + 1;
    const int ins = naive(a, n, b, m - 1) + 1, sub = naive(a, n - 1, b, m - 1) + (a[n - 1] != b[m - 1]);
    if (ins < best) best = ins;
    if (sub < best) best = sub;
    if (n > 1 && m > 1 && a[n - 1] == b[m - 2] && a[n - 2] == b[m - 1]) {
        const int swap = naive(a, n - 2, b, m - 2) + 1;
        if (swap < best) best = swap;
    }
    return best;
}

/* Every string of length 0..4 over {a, b, c} against every other: 121 x 121 pairs. */
static void test_distance_matches_definition(void **state) {
    (void)state;
    char words[121][5];
    int n = 0;
    for (int len = 0; len <= 4; len++) {
        int count = 1;
        for (int i = 0; i < len; i++)
            count *= 3;
        for (int code = 0; code < count; code++, n++) {
            int c = code;
            for (int i = 0; i < len; i++, c /= 3)
                words[n][i] = (char)('a' + c % 3);
            words[n][len] = '\0';
        }
    }
    assert_int_equal(n, 121);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            const int want = naive(words[i], (int)strlen(words[i]), words[j], (int)strlen(words[j]));
            if (husai_edit_distance(words[i], words[j]) != want) {
                print_error("'%s' vs '%s': %d, expected %d\n", words[i], words[j],
                            husai_edit_distance(words[i], words[j]), want);
                fail();
            }
        }
}

static void test_distance_known_cases(void **state) {
    (void)state;
    assert_int_equal(husai_edit_distance("kitten", "sitting"), 3);
    assert_int_equal(husai_edit_distance("sede", "seed"), 1); /* one swap */
    assert_int_equal(husai_edit_distance("", "force"), 5);
    assert_int_equal(husai_edit_distance("run_id", "run-id"), 1);
    char longer[100];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    assert_int_equal(husai_edit_distance(longer, "x"), 99); /* capped, never read past the table */
}

static void test_suggestion_rule(void **state) {
    (void)state;
    const char *const cmds[] = {"sweep", "plan", "merge", "synth", "ci", "export", "version", "help"};
    const int n = (int)(sizeof cmds / sizeof cmds[0]);
    assert_string_equal(husai_suggest("swep", cmds, n), "sweep");
    assert_string_equal(husai_suggest("exprot", cmds, n), "export");
    assert_string_equal(husai_suggest("plna", cmds, n), "plan");
    assert_string_equal(husai_suggest("verison", cmds, n), "version");
    assert_null(husai_suggest("frobnicate", cmds, n));
    assert_null(husai_suggest("c", cmds, n)); /* as many edits as letters: anything is that close */
    assert_null(husai_suggest("pln", (const char *const[]){"plan", "pin"}, 2)); /* a tie */
    /* short words: 1 edit at most ("mrg" is 2 from "merge"), longer ones 2 */
    assert_null(husai_suggest("mrg", cmds, n));
    assert_string_equal(husai_suggest("syntth", cmds, n), "synth");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distance_matches_definition),
        cmocka_unit_test(test_distance_known_cases),
        cmocka_unit_test(test_suggestion_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
