/*
 * tools.h: the `weft <tool> ...` subcommands that are not roles.  Each takes
 * main's argc/argv shifted so that argv[0] is the tool's name, prints to
 * stdout/stderr, and returns the process exit code.
 */
#ifndef WF_TOOLS_TOOLS_H
#define WF_TOOLS_TOOLS_H

/*
 * weft validate PATH...: loads every file and directory as istiod would and
 * prints each problem as `file:line:col: Kind/namespace/name: field: message`
 * on stdout.  Exit codes: 0 valid (prints `ok: N resources in M files`),
 * 1 problems found, 2 usage error or a PATH that cannot be read.
 */
int wf_tool_validate(int argc, char **argv);

#endif
