// serve_cmd.h: `qlora serve` (serve/server.h has the server itself).
#ifndef QL_SERVE_CMD_H
#define QL_SERVE_CMD_H

int cmd_serve(int argc, char **argv);

#endif
