# CPack: `cmake --build build --target package` makes a .tar.gz of the installed tree and
# a .deb. The .deb's dependencies are computed by dpkg-shlibdeps from the files it holds,
# with the bundle's libraries (cmake/AwsBundle.cmake) declared private: a static build
# then depends on nothing, a dynamic one on what it really links.
set(CPACK_GENERATOR "TGZ;DEB")
set(CPACK_PACKAGE_NAME batch-agent)
set(CPACK_PACKAGE_VENDOR "batch-agent")
set(CPACK_PACKAGE_CONTACT "batch-agent maintainers <batch-agent@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_FILE_NAME "batch-agent-${PROJECT_VERSION}-${CMAKE_SYSTEM_PROCESSOR}")
set(CPACK_INCLUDE_TOPLEVEL_DIRECTORY OFF)
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr/local")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS
    "${CPACK_PACKAGING_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBEXECDIR}/batch-agent/aws/lib")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "${PROJECT_DESCRIPTION}
 batch-agent is the ENTRYPOINT of worker container images on AWS Batch: a PID-1
 init that finds the job's manager, authenticates with a shared cookie and runs
 the payload. Static build: runs in any image, with no libc required.")
include(CPack)
