// train_cmd.h: qlora train.
#ifndef QL_TRAIN_CMD_H
#define QL_TRAIN_CMD_H

int cmd_train(int argc, char **argv);

#endif
