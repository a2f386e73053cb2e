// Explicit instantiation helper: each op file instantiates its templates for float and double.
#pragma once
#define LCD_FOR_EACH_SCALAR(X) X(float) X(double)
