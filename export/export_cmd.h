// export_cmd.h: qlora export (see export_cmd.c).
#ifndef QL_EXPORT_CMD_H
#define QL_EXPORT_CMD_H

int cmd_export(int argc, char **argv);

#endif
