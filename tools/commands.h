#pragma once
/* Subcommands of the xattn tool. Each returns the process exit status. */

int xattn_cmd_info(int argc, char **argv);
int xattn_cmd_plan(int argc, char **argv);
int xattn_cmd_check(int argc, char **argv);
int xattn_cmd_bench(int argc, char **argv);
