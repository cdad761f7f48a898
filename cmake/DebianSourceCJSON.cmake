# dep_cjson for static programs. Debian ships no libcjson.a, so cJSON is compiled from
# Debian's own source package, fetched at configure time with `apt-get source cjson`
# (needs a deb-src entry for the build machine's suite; scripts/install-deps.sh adds
# one). The repository carries none of cJSON's code. An unpacked source tree elsewhere
# may be named with -DCJSON_SOURCE_DIR=DIR (e.g. for an offline build).
set(CJSON_SOURCE_DIR "" CACHE PATH "an unpacked Debian cjson source package (default: apt-get source cjson)")

function(batch_agent_cjson_from_debian_source)
  set(dir "${CJSON_SOURCE_DIR}")
  if(NOT dir)
    set(download "${CMAKE_BINARY_DIR}/_deps/cjson-src")
    file(GLOB found LIST_DIRECTORIES true "${download}/cjson-*/cJSON.c")
    if(NOT found)
      file(MAKE_DIRECTORY "${download}")
      find_program(APT_GET apt-get REQUIRED)
      message(STATUS "cJSON: apt-get source cjson (Debian ships no libcjson.a)")
      execute_process(COMMAND ${APT_GET} source --quiet cjson
                      WORKING_DIRECTORY "${download}" RESULT_VARIABLE result
                      OUTPUT_VARIABLE output ERROR_VARIABLE output)
      file(GLOB found LIST_DIRECTORIES true "${download}/cjson-*/cJSON.c")
      if(NOT result EQUAL 0 OR NOT found)
        message(FATAL_ERROR "cJSON: `apt-get source cjson` failed (status ${result}). It needs a "
                "deb-src entry for this suite (scripts/install-deps.sh adds one) and dpkg-dev; or "
                "give -DCJSON_SOURCE_DIR=DIR, or -DBATCH_AGENT_STATIC=OFF.\n${output}")
      endif()
    endif()
    list(GET found 0 source)
    get_filename_component(dir "${source}" DIRECTORY)
  endif()
  if(NOT EXISTS "${dir}/cJSON.c" OR NOT EXISTS "${dir}/cJSON.h")
    message(FATAL_ERROR "CJSON_SOURCE_DIR=${dir} holds no cJSON.c and cJSON.h")
  endif()
  message(STATUS "cJSON: compiled from ${dir}")
  # The agent includes <cjson/cJSON.h>, as Debian's libcjson-dev installs it.
  configure_file("${dir}/cJSON.h" "${CMAKE_BINARY_DIR}/_deps/cjson-include/cjson/cJSON.h" COPYONLY)
  add_library(cjson_debian STATIC "${dir}/cJSON.c")
  # Another project's code: built as its own build system builds it, not under our
  # warning flags.
  target_compile_options(cjson_debian PRIVATE -w)
  target_compile_definitions(cjson_debian PRIVATE CJSON_HIDE_SYMBOLS)
  target_include_directories(cjson_debian INTERFACE "${CMAKE_BINARY_DIR}/_deps/cjson-include")
  target_link_libraries(cjson_debian PRIVATE m)
  add_library(dep_cjson INTERFACE)
  target_link_libraries(dep_cjson INTERFACE cjson_debian)
endfunction()
