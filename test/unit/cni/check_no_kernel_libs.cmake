# Fails if BINARY (the `ruleplane` CNI plugin) depends, directly or through
# another shared library, on libnftnl, libmnl or libbpf, or has them linked
# in statically.
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
# A fully static binary (RULEPLANE_CNI_STATIC_GLIBC) has no shared
# libraries to inspect: look for the libraries' own symbols instead.
file(STRINGS ${BINARY} static_hits REGEX "(nftnl_batch_begin|mnl_socket_open|bpf_object__open)" LIMIT_COUNT 3)
if(static_hits)
  list(APPEND bad "symbols linked in: ${static_hits}")
endif()
if(bad)
  message(FATAL_ERROR "ruleplane links kernel packet-filter libraries: ${bad}")
endif()
list(LENGTH resolved n)
message(STATUS "ruleplane: ${n} shared libraries, none of libnftnl/libmnl/libbpf")
