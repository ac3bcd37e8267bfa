/**
 * @file fusedloss/version.h
 * @brief The library's version: its one place. CMakeLists.txt reads it for project(), setup.py
 * for the Python package's metadata, and the package asks the loaded library (fusedloss_version).
 */
#ifndef FUSEDLOSS_VERSION_H
#define FUSEDLOSS_VERSION_H

/** @brief The major version. */
#define FUSEDLOSS_VERSION_MAJOR 0
/** @brief The minor version. */
#define FUSEDLOSS_VERSION_MINOR 1
/** @brief The patch version. */
#define FUSEDLOSS_VERSION_PATCH 0
/** @brief The version as major * 10000 + minor * 100 + patch. */
#define FUSEDLOSS_VERSION \
  (FUSEDLOSS_VERSION_MAJOR * 10000 + FUSEDLOSS_VERSION_MINOR * 100 + FUSEDLOSS_VERSION_PATCH)

#endif  // FUSEDLOSS_VERSION_H
