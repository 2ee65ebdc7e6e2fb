// commands.h: the subcommands behind `qlora <command>`. Each parses its own
// options, prints results to stdout and messages to stderr, and returns the
// process exit code.
#ifndef QL_COMMANDS_H
#define QL_COMMANDS_H

int cmd_infer(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
