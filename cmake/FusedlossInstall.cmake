# Installs the library, its public headers and a package config, so that another project can
# `find_package(fusedloss)` and link `fusedloss::fusedloss`.
include(CMakePackageConfigHelpers)

install(TARGETS fusedloss EXPORT fusedlossTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET fusedloss_shared)
  # fusedloss::shared for consumers that want the shared library (the one the binding loads).
  set_target_properties(fusedloss_shared PROPERTIES EXPORT_NAME shared)
  install(TARGETS fusedloss_shared EXPORT fusedlossTargets LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
if(TARGET fusedloss_nccl)
  install(TARGETS fusedloss_nccl EXPORT fusedlossTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
install(DIRECTORY include/fusedloss DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT fusedlossTargets NAMESPACE fusedloss::
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fusedloss)

configure_package_config_file(cmake/fusedloss-config.cmake.in
  ${PROJECT_BINARY_DIR}/fusedloss-config.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fusedloss)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/fusedloss-config-version.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/fusedloss-config.cmake
              ${PROJECT_BINARY_DIR}/fusedloss-config-version.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fusedloss)
