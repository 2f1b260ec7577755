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

/*
 * weft proxy-status [--istiod ADDR]: fetches /debug/syncz from istiod's
 * monitoring address (127.0.0.1:15014) and prints a table like istioctl
 * proxy-status: NAME NAMESPACE CDS LDS EDS ISTIOD VERSION, each type
 * SYNCED, NOT SENT, STALE or NACK.  Exit codes: 0 printed, 1 istiod
 * unreachable or a bad answer, 2 usage error.
 */
int wf_tool_proxy_status(int argc, char **argv);

/*
 * weft token --ca-dir DIR --namespace NS --service-account SA [--ttl 1h]
 * [--trust-domain cluster.local]: prints a bootstrap token (an ES256 JWT
 * signed with the CA key in DIR) and a newline.  The CA issues
 * spiffe://TD/ns/NS/sa/SA, and nothing else, to whoever presents it.  DIR
 * must already hold a CA.  Exit codes: 0 printed, 1 no CA or an unreadable
 * one, 2 usage error (bad flag, duration, namespace or service account).
 */
int wf_tool_token(int argc, char **argv);

#endif
