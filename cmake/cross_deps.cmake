# cross_deps.cmake: dependencies of a cross build (included by the top CMakeLists.txt when
# CMAKE_CROSSCOMPILING). The Arm sysroot has neither nlohmann-json nor GoogleTest:
#   - nlohmann-json is header-only: use the host's copy (Debian package nlohmann-json3-dev),
#     exposing ONLY /usr/include/nlohmann through a link in the build tree, never the whole
#     host /usr/include (its libc headers would shadow the Arm ones);
#   - GoogleTest is built from Debian's source package (googletest, /usr/src/googletest).
find_package(nlohmann_json 3 QUIET)
if(NOT nlohmann_json_FOUND)
  find_path(REPARQ_HOST_NLOHMANN_DIR nlohmann/json.hpp PATHS /usr/include /usr/local/include
            NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
  if(NOT REPARQ_HOST_NLOHMANN_DIR)
    message(FATAL_ERROR "cross build: nlohmann/json.hpp not found on the host (apt-get install nlohmann-json3-dev)")
  endif()
  set(_dir ${CMAKE_BINARY_DIR}/host-headers)
  file(MAKE_DIRECTORY ${_dir})
  file(CREATE_LINK ${REPARQ_HOST_NLOHMANN_DIR}/nlohmann ${_dir}/nlohmann SYMBOLIC)
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
  target_include_directories(nlohmann_json::nlohmann_json INTERFACE ${_dir})
  message(STATUS "cross build: nlohmann-json from ${REPARQ_HOST_NLOHMANN_DIR} (header-only)")
endif()

if(REPARQ_BUILD_TESTS)
  set(REPARQ_GTEST_SOURCE /usr/src/googletest CACHE PATH "GoogleTest sources for cross builds")
  if(NOT EXISTS ${REPARQ_GTEST_SOURCE}/CMakeLists.txt)
    message(FATAL_ERROR "cross build: no GoogleTest sources in ${REPARQ_GTEST_SOURCE} (apt-get install googletest)")
  endif()
  set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
  set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
  add_subdirectory(${REPARQ_GTEST_SOURCE} ${CMAKE_BINARY_DIR}/googletest EXCLUDE_FROM_ALL SYSTEM)
  set(GTest_FOUND TRUE)
endif()
