/* bnorm.h - the umbrella header: everything libbnorm offers. */
#ifndef BNORM_H
#define BNORM_H

#include "bnorm/status.h"
#include "bnorm/bn.h"

#define BNORM_VERSION_MAJOR 0
#define BNORM_VERSION_MINOR 1
#define BNORM_VERSION_PATCH 0

#endif /* BNORM_H */
