# Fails if BINARY (the `ruleplane` CNI plugin) depends, directly or through
# another shared library, on libnftnl, libmnl or libbpf.
# Usage: cmake -DBINARY=<path> -P check_no_kernel_libs.cmake
if(NOT BINARY)
  message(FATAL_ERROR "pass -DBINARY=<path to ruleplane>")
endif()
file(GET_RUNTIME_DEPENDENCIES
  EXECUTABLES ${BINARY}
  RESOLVED_DEPENDENCIES_VAR resolved
  UNRESOLVED_DEPENDENCIES_VAR unresolved)
set(bad)
foreach(lib IN LISTS resolved unresolved)
  get_filename_component(name ${lib} NAME)
  if(name MATCHES "^lib(nftnl|mnl|bpf)\\.so")
    list(APPEND bad ${lib})
  endif()
endforeach()
if(bad)
  message(FATAL_ERROR "ruleplane links kernel packet-filter libraries: ${bad}")
endif()
list(LENGTH resolved n)
message(STATUS "ruleplane: ${n} shared libraries, none of libnftnl/libmnl/libbpf")
