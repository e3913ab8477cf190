# Warning and sanitizer flags for our own targets (never for generated code).
set(SVC_WARNINGS -Wall -Wextra -Wshadow -Wstrict-prototypes -Wformat=2)
if(SVC_WERROR)
  list(APPEND SVC_WARNINGS -Werror)
endif()

if(SVC_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(SVC_FUZZ)
  # Coverage for libFuzzer in every object; the fuzz targets link libFuzzer itself.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(SVC_TSAN)
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
endif()

# svc_target_warnings(<target>): our warning set on one target.
function(svc_target_warnings target)
  target_compile_options(${target} PRIVATE ${SVC_WARNINGS})
endfunction()
