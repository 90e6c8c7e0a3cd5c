# Installs afd's client component into a temporary prefix, then configures, builds and runs a tiny
# outside CMake project that does find_package(afd REQUIRED) and links afd::client.
# Run as: cmake -DBUILD_DIR=... -DWORK_DIR=... -DCMAKE_COMMAND=... -P package_test.cmake
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR}/consumer)

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

run("building libafd_client.so" ${CMAKE_COMMAND} --build ${BUILD_DIR} --target afd_client_shared)
run("installing the client component" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix
    --component client)

file(WRITE ${WORK_DIR}/consumer/CMakeLists.txt [=[
cmake_minimum_required(VERSION 3.25)
project(afd_consumer LANGUAGES CXX)
find_package(afd 0.1 REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE afd::client)
]=])
file(WRITE ${WORK_DIR}/consumer/main.cpp [=[
// Nothing listens on port 1: connect must fail with errc::unavailable, as a value.
#include <cstdio>
#include <afd/client.hpp>
int main() {
  auto c = afd::client::cluster::connect("127.0.0.1", 1, std::chrono::milliseconds(2000));
  if (c) return 1;
  std::printf("%s\n", c.err().to_string().c_str());
  return c.err().code() == afd::errc::unavailable ? 0 : 2;
}
]=])
run("configuring the consumer" ${CMAKE_COMMAND} -S ${WORK_DIR}/consumer -B ${WORK_DIR}/consumer/build
    -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_BUILD_TYPE=Release)
run("building the consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/consumer/build)
run("running the consumer" ${WORK_DIR}/consumer/build/consumer)
if(NOT last_output MATCHES "unavailable: cannot connect to the coordinator at 127.0.0.1:1")
  message(FATAL_ERROR "unexpected consumer output: ${last_output}")
endif()
message(STATUS "consumer: ${last_output}")
file(REMOVE_RECURSE ${WORK_DIR})
