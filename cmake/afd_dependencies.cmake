# Third-party libraries, all from Debian's packages.
find_package(Threads REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(GTest REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(UCX REQUIRED IMPORTED_TARGET ucx)

# Debian's CAF 0.17 ships no CMake package: find its two libraries and headers by hand.
find_path(CAF_INCLUDE_DIR caf/all.hpp REQUIRED)
find_library(CAF_CORE_LIBRARY caf_core REQUIRED)
find_library(CAF_IO_LIBRARY caf_io REQUIRED)
add_library(caf_libraries INTERFACE)
add_library(afd::caf ALIAS caf_libraries)
target_include_directories(caf_libraries SYSTEM INTERFACE ${CAF_INCLUDE_DIR})
target_link_libraries(caf_libraries INTERFACE ${CAF_CORE_LIBRARY} ${CAF_IO_LIBRARY} Threads::Threads)
# CAF's OpenSSL module (TLS with mutual authentication on the control plane) and OpenSSL 3 itself.
find_package(OpenSSL 3 REQUIRED COMPONENTS SSL Crypto)
find_library(CAF_OPENSSL_LIBRARY caf_openssl REQUIRED)
add_library(caf_openssl_library INTERFACE)
add_library(afd::caf_openssl ALIAS caf_openssl_library)
target_link_libraries(caf_openssl_library INTERFACE ${CAF_OPENSSL_LIBRARY} caf_libraries OpenSSL::SSL OpenSSL::Crypto)
