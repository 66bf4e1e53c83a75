"""One module per `vggspec` command: flags in, a runtime call, text out."""
