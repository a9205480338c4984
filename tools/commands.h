#pragma once
/* Subcommands of the xattn tool. Each returns the process exit status:
 * 0 success, 1 a failure, 2 bad usage. */
#include "json.h"
#include "xattn.h"

int xattn_cmd_info(int argc, char **argv);
int xattn_cmd_plan(int argc, char **argv);
int xattn_cmd_check(int argc, char **argv);
int xattn_cmd_bench(int argc, char **argv);

/* A device's caps as the "caps" member of the open JSON object (info.c;
 * plan prints a preset's with it). */
void xattn_tool_json_caps(xattn_json *j, const xattn_device_caps *caps);
