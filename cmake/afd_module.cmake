# One INTERFACE target carries the language standard and the warnings; afd_add_library and
# afd_add_test give every module the same shape: a library `afd_<name>` with alias `afd::<name>`,
# and test executables registered with ctest under labels.

add_library(afd_options INTERFACE)
add_library(afd::options ALIAS afd_options)
target_compile_features(afd_options INTERFACE cxx_std_20)
target_compile_options(afd_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-missing-field-initializers>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${AFD_WERROR}>>:-Werror>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${AFD_NATIVE}>>:-march=native>
  # GCC 12 at -O3 reports -Wrestrict and -Wstringop-overread inside libstdc++ (string appends,
  # vector<uint8_t> comparisons) on correct code (GCC bugs 105329, 105651); under -Werror they
  # stopped the build of topology and actors.
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>>:-Wno-restrict -Wno-stringop-overread>)
# Headers are included by their path from the repository root: "runtime/core/error.hpp".
target_include_directories(afd_options INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)

# Adds every sub-folder of the current folder that has a CMakeLists.txt.
function(afd_add_subdirectories)
  file(GLOB children RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/*/CMakeLists.txt)
  list(SORT children)
  foreach(child ${children})
    get_filename_component(dir ${child} DIRECTORY)
    add_subdirectory(${dir})
  endforeach()
endfunction()

# afd_add_library(NAME SOURCES ... [DEPS ...] [PRIVATE_DEPS ...])
function(afd_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(afd_${name} ${ARG_SOURCES})
  add_library(afd::${name} ALIAS afd_${name})
  set_target_properties(afd_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_link_libraries(afd_${name} PUBLIC afd::options ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
endfunction()

# afd_add_test(NAME SOURCES ... [DEPS ...] [LABELS ...] [TIMEOUT seconds])
# Each test executable is one ctest entry; gtest filters stay available through the executable.
function(afd_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE afd::options ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT})
  if(ARG_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
endfunction()
