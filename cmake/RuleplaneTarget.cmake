# Warnings for the project's own targets (not for generated code).
function(ruleplane_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(RULEPLANE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
