/* commands.h: husai's subcommands; each returns the process exit status.
 * defines: husai_cmd_ci, husai_cmd_sweep, husai_cmd_merge, husai_cmd_synth, husai_cmd_export, husai_cmd_plan,
 *          husai_cmd_import, husai_cmd_report, husai_cmd_version */
#ifndef HUSAI_CLI_COMMANDS_H
#define HUSAI_CLI_COMMANDS_H

/* `husai ci`: bootstrap CI of values read from a file or stdin, printed as one JSON object. No MPI. */
int husai_cmd_ci(int argc, char **argv);

/* `husai export`: one trained SAE of a run directory as SAELens safetensors + cfg.json. No MPI. */
int husai_cmd_export(int argc, char **argv);

/* `husai import`: .npy / safetensors activations into one chunked float32 HDF5 dataset. No MPI. */
int husai_cmd_import(int argc, char **argv);

/* `husai plan`: the conditions and tasks a sweep of a config would run, human-readable, as JSON or one
 * field at a time (for job scripts). No MPI; the data file is not opened. */
int husai_cmd_plan(int argc, char **argv);

/* `husai sweep`: the seed-parallel sweep; must be called between MPI_Init and MPI_Finalize. */
int husai_cmd_sweep(int argc, char **argv);

/* `husai merge`: joins the run directories of a sweep split over its values (one process). */
int husai_cmd_merge(int argc, char **argv);

/* `husai report`: summary.md, conditions.csv, the plots and report.html of a finished run made again from
 * its results.json and results.h5. No MPI. */
int husai_cmd_report(int argc, char **argv);

/* `husai synth`: synthetic activations from a known random dictionary, written in parallel under MPI;
 * must be called between MPI_Init and MPI_Finalize. */
int husai_cmd_synth(int argc, char **argv);

/* `husai version` / `husai --version`: version, commit, build type and the libraries' run-time versions.
 * No MPI_Init needed. */
int husai_cmd_version(int argc, char **argv);

#endif
