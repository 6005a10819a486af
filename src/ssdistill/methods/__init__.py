"""Distillation methods, one module each; the registry (name -> class) is ``ssdistill.methods.registry.METHODS``.
This package file imports nothing, so importing one method never imports the others."""
