# Build-time protobuf-c generation and FileDescriptorSet embedding.
# Nothing generated here is ever committed.
find_program(PROTOC protoc REQUIRED)
find_program(PROTOC_C protoc-c REQUIRED)
set(SVC_GRPC_PROTO_DIR /usr/share/grpc-proto CACHE PATH "Debian grpc-proto package root")
set(SVC_GEN_DIR ${CMAKE_BINARY_DIR}/gen)

# svc_protobuf_c(<target> ROOT <dir> PROTOS <relative paths...>)
# Generates <path>.pb-c.c/.h under ${SVC_GEN_DIR} and builds them as a static library.
function(svc_protobuf_c target)
  cmake_parse_arguments(ARG "" "ROOT" "PROTOS" ${ARGN})
  set(srcs)
  foreach(proto ${ARG_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" base ${proto})
    set(c ${SVC_GEN_DIR}/${base}.pb-c.c)
    set(h ${SVC_GEN_DIR}/${base}.pb-c.h)
    add_custom_command(
      OUTPUT ${c} ${h}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${SVC_GEN_DIR}
      COMMAND ${PROTOC_C} --c_out=${SVC_GEN_DIR} -I ${ARG_ROOT} ${proto}
      COMMAND ${CMAKE_COMMAND} -DHEADER=${h} -P ${PROJECT_SOURCE_DIR}/cmake/protoc_c_keywords.cmake
      DEPENDS ${ARG_ROOT}/${proto} ${PROJECT_SOURCE_DIR}/cmake/protoc_c_keywords.cmake
      COMMENT "protoc-c ${proto}"
      VERBATIM)
    list(APPEND srcs ${c})
  endforeach()
  add_library(${target} STATIC ${srcs})
  target_include_directories(${target} SYSTEM PUBLIC ${SVC_GEN_DIR})
  target_link_libraries(${target} PUBLIC PkgConfig::PROTOBUFC)
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()

# svc_descriptor_set(<target> SYMBOL <c name> ROOTS <dirs...> PROTOS <paths...>)
# Runs protoc --include_imports --descriptor_set_out and embeds the bytes as
#   const unsigned char <c name>[]; const size_t <c name>_len;
# in a static library, for server reflection.
function(svc_descriptor_set target)
  cmake_parse_arguments(ARG "" "SYMBOL" "ROOTS;PROTOS" ${ARGN})
  set(includes)
  set(deps)
  foreach(root ${ARG_ROOTS})
    list(APPEND includes -I ${root})
  endforeach()
  foreach(proto ${ARG_PROTOS})
    foreach(root ${ARG_ROOTS})
      if(EXISTS ${root}/${proto})
        list(APPEND deps ${root}/${proto})
      endif()
    endforeach()
  endforeach()
  set(pb ${CMAKE_CURRENT_BINARY_DIR}/${ARG_SYMBOL}.pb)
  set(c ${CMAKE_CURRENT_BINARY_DIR}/${ARG_SYMBOL}.c)
  add_custom_command(
    OUTPUT ${pb}
    COMMAND ${PROTOC} --include_imports --descriptor_set_out=${pb} ${includes} ${ARG_PROTOS}
    DEPENDS ${deps}
    COMMENT "descriptor set ${ARG_SYMBOL}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${c}
    COMMAND ${CMAKE_COMMAND} -DIN=${pb} -DOUT=${c} -DSYMBOL=${ARG_SYMBOL}
            -P ${PROJECT_SOURCE_DIR}/cmake/embed.cmake
    DEPENDS ${pb} ${PROJECT_SOURCE_DIR}/cmake/embed.cmake
    VERBATIM)
  add_library(${target} STATIC ${c})
endfunction()
