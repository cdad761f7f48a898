# How batch-agent-aws is installed.
#
# It keeps libcurl, and Debian ships no static libcurl (nor static archives of its GSSAPI,
# LDAP, SSH, IDN... dependencies). So with BATCH_AGENT_STATIC it is installed as a
# self-contained bundle that brings its own loader and libraries:
#
#   libexec/batch-agent/batch-agent-aws          static launcher (agent/aws/launcher.c)
#   libexec/batch-agent/aws/batch-agent-aws      the helper itself (dynamic, libcurl)
#   libexec/batch-agent/aws/lib/ld.so            -> the build machine's loader (PT_INTERP)
#   libexec/batch-agent/aws/lib/*.so.*           every library it needs, found with
#                                                file(GET_RUNTIME_DEPENDENCIES)
#   libexec/batch-agent/aws/ca-certificates.crt  the build machine's CA store, used only
#                                                where the image has none
#
# The agent runs the launcher (as it runs any helper); the launcher execs
# `aws/lib/ld.so --library-path aws/lib aws/batch-agent-aws ...`, so nothing of the
# image's libc or libraries is loaded. Without BATCH_AGENT_STATIC the helper is
# installed as a plain dynamic program.
set(BATCH_AGENT_HELPER_DIR "${CMAKE_INSTALL_LIBEXECDIR}/batch-agent")

function(batch_agent_aws_bundle target)
  if(NOT BATCH_AGENT_STATIC)
    install(TARGETS ${target} RUNTIME DESTINATION ${BATCH_AGENT_HELPER_DIR})
    return()
  endif()
  add_executable(batch-agent-aws-launcher ${PROJECT_SOURCE_DIR}/agent/aws/launcher.c)
  target_link_options(batch-agent-aws-launcher PRIVATE -static-pie)
  target_compile_definitions(batch-agent-aws-launcher PRIVATE
    BATCH_AGENT_LIBEXECDIR="${CMAKE_INSTALL_FULL_LIBEXECDIR}/batch-agent")
  install(PROGRAMS $<TARGET_FILE:batch-agent-aws-launcher>
          DESTINATION ${BATCH_AGENT_HELPER_DIR} RENAME batch-agent-aws)
  install(TARGETS ${target} RUNTIME DESTINATION ${BATCH_AGENT_HELPER_DIR}/aws)
  find_program(READELF readelf REQUIRED)
  # At install time (and so for CPack too): the libraries of the file just built, as
  # this machine's loader resolves them, and the loader itself.
  install(CODE "
    set(bundle \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${BATCH_AGENT_HELPER_DIR}/aws\")
    set(program \"$<TARGET_FILE:${target}>\")
    file(GET_RUNTIME_DEPENDENCIES EXECUTABLES \"\${program}\"
         RESOLVED_DEPENDENCIES_VAR libraries UNRESOLVED_DEPENDENCIES_VAR missing)
    if(missing)
      message(FATAL_ERROR \"batch-agent-aws bundle: unresolved libraries: \${missing}\")
    endif()
    execute_process(COMMAND \"${READELF}\" --program-headers \"\${program}\"
                    OUTPUT_VARIABLE headers COMMAND_ERROR_IS_FATAL ANY)
    string(REGEX MATCH \"interpreter: ([^]]+)\\\\]\" found \"\${headers}\")
    if(NOT CMAKE_MATCH_1)
      message(FATAL_ERROR \"batch-agent-aws bundle: no PT_INTERP in \${program}\")
    endif()
    get_filename_component(loader_name \"\${CMAKE_MATCH_1}\" NAME)
    file(MAKE_DIRECTORY \"\${bundle}/lib\")
    foreach(library \${libraries} \${CMAKE_MATCH_1})
      get_filename_component(name \"\${library}\" NAME)
      message(STATUS \"Bundling: \${bundle}/lib/\${name}\")
      file(COPY_FILE \"\${library}\" \"\${bundle}/lib/\${name}\" ONLY_IF_DIFFERENT)
    endforeach()
    # The loader under the one name the launcher knows, whatever the machine calls it.
    file(CREATE_LINK \"\${loader_name}\" \"\${bundle}/lib/ld.so\" SYMBOLIC)
    if(EXISTS /etc/ssl/certs/ca-certificates.crt)
      file(COPY_FILE /etc/ssl/certs/ca-certificates.crt \"\${bundle}/ca-certificates.crt\" ONLY_IF_DIFFERENT)
    else()
      message(WARNING \"batch-agent-aws bundle: no /etc/ssl/certs/ca-certificates.crt to bundle \"
              \"(install ca-certificates): images without a CA store need AWS_CA_BUNDLE\")
    endif()
  ")
endfunction()
