# Install rules and the CMake package, so that another CMake project can do
#   find_package(afd REQUIRED)
#   target_link_libraries(app PRIVATE afd::client)
# The package's afd::client is one shared library (libafd_client.so) holding the client API and
# everything under it (actors, transport, kernels, engine), so its users need neither CAF, UCX nor
# yaml-cpp headers. Components: "client" (library, headers, package files) and "cli" (`afd`).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

add_library(afd_client_shared SHARED ${CMAKE_CURRENT_LIST_DIR}/package/afd_client_package.cpp)
target_link_libraries(afd_client_shared PRIVATE afd::client)
# Every symbol resolved at build time: a missing piece fails here, not in a user's link.
target_link_options(afd_client_shared PRIVATE LINKER:--no-undefined)
target_compile_features(afd_client_shared INTERFACE cxx_std_20)
target_include_directories(afd_client_shared INTERFACE $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
set_target_properties(afd_client_shared PROPERTIES
  OUTPUT_NAME afd_client
  EXPORT_NAME client
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}
  # Libraries found outside the system paths (CUDA) stay reachable from the installed library.
  INSTALL_RPATH_USE_LINK_PATH TRUE)

install(TARGETS afd_client_shared EXPORT afdTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT client
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT client)
# <afd/client.hpp> includes "runtime/core/error.hpp", found beside it first.
install(FILES ${PROJECT_SOURCE_DIR}/deploy/client/include/afd/client.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/afd COMPONENT client)
install(FILES ${PROJECT_SOURCE_DIR}/runtime/core/error.hpp ${PROJECT_SOURCE_DIR}/runtime/core/worker_state.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/afd/runtime/core COMPONENT client)
install(EXPORT afdTargets NAMESPACE afd:: FILE afdTargets.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/afd COMPONENT client)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/package/afdConfig.cmake.in
  ${PROJECT_BINARY_DIR}/afdConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/afd)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/afdConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/afdConfig.cmake ${PROJECT_BINARY_DIR}/afdConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/afd COMPONENT client)

install(TARGETS afd RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cli)
