# protoc_c_keywords.cmake: run after protoc-c on one generated header (-DHEADER=...).
# protoc-c names a service's vtable members after its methods in lower case,
# so an rpc named like a C keyword (balance.v1's Void) yields
# `void (*void)(...)`, which does not compile. Such members get a trailing
# underscore (`void_`); nothing in our code calls through that vtable, and the
# method's wire name and descriptor are unchanged.
file(READ ${HEADER} text)
set(keywords auto break case char const continue default do double else enum extern float for
    goto if inline int long register restrict return short signed sizeof static struct switch
    typedef union unsigned void volatile while)
set(fixed "${text}")
foreach(k ${keywords})
  string(REPLACE "(*${k})(" "(*${k}_)(" fixed "${fixed}")
  string(REPLACE "function_prefix__ ## ${k}," "function_prefix__ ## ${k}_," fixed "${fixed}")
  string(REPLACE "function_prefix__ ## ${k} " "function_prefix__ ## ${k}_ " fixed "${fixed}")
endforeach()
if(NOT fixed STREQUAL text)
  file(WRITE ${HEADER} "${fixed}")
endif()
