/* Progress lines (src/sweep/progress.c) driven with a made-up clock, so the rule is checked exactly,
 * without timing: a task of 1 s steps prints its first step, then a line whenever the next step (if twice
 * as slow) would end past the interval, so gaps stay within it; epoch ends print unless a line came less
 * than a tenth of the interval before; the ETAs equal the remaining work at the observed speed (this task's
 * steps and the rank's later tasks weighted by steps x work per step); seconds = 0 prints nothing; a live
 * line is \r ... ESC[K without a newline and is cleared; durations format as 1h02m / 3m10s / 42s. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sweep/progress.h"

static int saved_fd = -1;
static FILE *capture_file;

/* Sends stdout to a temporary file until captured() returns what was written. */
static void capture(void) {
    fflush(stdout);
    capture_file = tmpfile();
    assert_non_null(capture_file);
    saved_fd = dup(STDOUT_FILENO);
    assert_true(dup2(fileno(capture_file), STDOUT_FILENO) >= 0);
}

static char *captured(void) {
    fflush(stdout);
    assert_true(dup2(saved_fd, STDOUT_FILENO) >= 0);
    close(saved_fd);
    const long n = ftell(capture_file);
    char *text = calloc((size_t)n + 1, 1);
    rewind(capture_file);
    assert_int_equal(fread(text, 1, (size_t)n, capture_file), (size_t)n);
    fclose(capture_file);
    return text;
}

/* Seconds in a duration as husai_progress_duration writes it (1h02m, 3m10s, 42s). */
static long parse_duration(const char *s) {
    long h = 0, m = 0, sec = 0;
    if (sscanf(s, "%ldh%ldm", &h, &m) == 2) return 3600 * h + 60 * m;
    if (sscanf(s, "%ldm%lds", &m, &sec) == 2) return 60 * m + sec;
    if (sscanf(s, "%lds", &sec) == 1) return sec;
    return -1;
}

static void test_durations(void **state) {
    (void)state;
    char b[32];
    husai_progress_duration(3725.0, b, sizeof b);
    assert_string_equal(b, "1h02m");
    husai_progress_duration(190.4, b, sizeof b);
    assert_string_equal(b, "3m10s");
    husai_progress_duration(41.6, b, sizeof b);
    assert_string_equal(b, "42s");
    husai_progress_duration(NAN, b, sizeof b);
    assert_string_equal(b, "0s");
    husai_progress_duration(-5.0, b, sizeof b);
    assert_string_equal(b, "0s");
}

/* Two tasks on this rank: the first 100 steps of work 1 (2 epochs of 50), the second 50 steps of work 2.
 * The first runs at 1 s per step from t = 1000. */
static void test_plain_lines_and_etas(void **state) {
    (void)state;
    setenv("HUSAI_PROGRESS", "plain", 1);
    husai_progress p;
    husai_progress_init(&p, 30.0, 3);
    assert_false(husai_progress_is_live(&p));
    husai_progress_plan(&p, 2, 100.0 * 1.0 + 50.0 * 2.0);
    const double t0 = 1000.0;
    capture();
    husai_progress_task(&p, "", "k=32", 7, 2, 100, 0, 1.0, t0);
    for (int s = 1; s <= 100; s++)
        husai_progress_step(&p, s, s / 50.0, 64, 0.5 / s, s % 50 == 0, t0 + s);
    husai_progress_task_end(&p);
    char *out = captured();

    int n_lines = 0, prev_step = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), n_lines++) {
        int rank, task, n_tasks, epochs, step, total;
        unsigned long long seed;
        double epoch, sps, loss;
        char when[40], cond[40], eta_task[16], eta_run[16];
        const int got =
            sscanf(line,
                   "[husai] rank=%d time=%39s progress cond=%39s seed=%llu task=%d/%d epoch=%lf/%d "
                   "step=%d/%d samples_per_s=%lf loss=%lf eta_task=%15s eta_run=%15s",
                   &rank, when, cond, &seed, &task, &n_tasks, &epoch, &epochs, &step, &total, &sps, &loss,
                   eta_task, eta_run);
        if (got != 14) {
            print_error("unparsed (%d fields): %s\n", got, line);
            fail();
        }
        assert_int_equal(rank, 3);
        assert_string_equal(cond, "k=32");
        assert_int_equal(seed, 7);
        assert_int_equal(task, 1);
        assert_int_equal(n_tasks, 2);
        assert_int_equal(total, 100);
        assert_int_equal(epochs, 2);
        assert_true(fabs(epoch - step / 50.0) < 0.006);
        assert_true(fabs(loss - 0.5 / step) <= 1e-5 * (0.5 / step)); /* printed to 6 digits */
        /* 64 rows per 1 s step, over the time since the previous line (the task's start at first) */
        assert_true(fabs(sps - 64.0) < 0.5);
        /* 1 s per step: the task's rest is (100 - step) s; the rank's adds the second task's 50 x 2 s */
        assert_int_equal(parse_duration(eta_task), 100 - step);
        assert_int_equal(parse_duration(eta_run), 100 - step + 100);
        const int gap = step - prev_step;
        if (prev_step > 0) {
            assert_true(gap <= 30); /* never longer than the interval */
            if (step % 50)
                assert_int_equal(gap, 28); /* due when 2 more steps would pass 30 s */
            else
                assert_true(gap >= 3); /* an epoch end: not within 3 s */
        } else {
            assert_int_equal(step, 1); /* the rank's first line comes at the first step */
        }
        prev_step = step;
    }
    /* steps 1, 29, 50 (epoch end), 78, 100 (epoch end) */
    assert_int_equal(n_lines, 5);
    assert_int_equal(prev_step, 100);
    free(out);
}

static void test_seconds_zero_prints_nothing(void **state) {
    (void)state;
    setenv("HUSAI_PROGRESS", "plain", 1);
    husai_progress p;
    husai_progress_init(&p, 0.0, 0);
    husai_progress_plan(&p, 1, 10.0);
    capture();
    husai_progress_task(&p, "calibrate", "k=4", 1, 1, 10, 0, 1.0, 0.0);
    for (int s = 1; s <= 10; s++)
        husai_progress_step(&p, s, s / 10.0, 8, 1.0, s == 10, 100.0 * s);
    husai_progress_evaluating(&p, 1000, 2000.0);
    husai_progress_task_end(&p);
    char *out = captured();
    assert_string_equal(out, "");
    free(out);
}

static void test_live_line(void **state) {
    (void)state;
    setenv("HUSAI_PROGRESS", "live", 1);
    husai_progress p;
    husai_progress_init(&p, 30.0, 1);
    assert_true(husai_progress_is_live(&p));
    husai_progress_plan(&p, 1, 10.0);
    capture();
    husai_progress_task(&p, "calibrate", "k=4", 5, 1, 10, 0, 1.0, 0.0);
    husai_progress_step(&p, 1, 0.1, 8, 0.25, 0, 1.0);
    husai_progress_step(&p, 2, 0.2, 8, 0.25, 0, 1.2); /* within the live interval (1 s): nothing */
    husai_progress_step(&p, 3, 0.3, 8, 0.25, 0, 2.1); /* due */
    husai_progress_evaluating(&p, 500, 40.0);         /* trained 40 s >= 30: said */
    husai_progress_task_end(&p);
    char *out = captured();
    assert_null(strchr(out, '\n'));
    const char *want1 = "\r[husai r1] calibrate/k=4 seed=5 (1/1) epoch 0.10/1 eta 9s, rank 9s | step 1/10";
    assert_true(strncmp(out, want1, strlen(want1)) == 0);
    assert_non_null(strstr(out, "\033[K\r[husai r1] calibrate/k=4 seed=5 (1/1) epoch 0.30/1 eta"));
    assert_null(strstr(out, "epoch 0.20/1"));
    assert_non_null(strstr(out, "evaluating on 500 rows\033[K"));
    /* task_end clears the line: it ends with \r ESC[K */
    const size_t n = strlen(out);
    assert_true(n > 4 && strcmp(out + n - 4, "\r\033[K") == 0);
    free(out);
    unsetenv("HUSAI_PROGRESS");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_plain_lines_and_etas),
        cmocka_unit_test(test_seconds_zero_prints_nothing),
        cmocka_unit_test(test_live_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
