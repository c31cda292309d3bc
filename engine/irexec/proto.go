package irexec

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/ir"
	pb "github.com/open-policy-agent/opa/v1/ir/v1pb"
	"google.golang.org/protobuf/proto"
)

// PlanProto decodes a plan as OPA's compile package writes it in its protobuf format
// (compile.PlanFormatProto, OPA's plan.proto). It is much cheaper to write and read than the
// JSON plan (a code activation of the default policy took 87 ms with JSON plans, 46 ms with
// these), which matters because every activation that changes code plans the policy.
func PlanProto(raw []byte) (*ir.Policy, error) {
	var p pb.Policy
	if err := proto.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("decode plan: %w", err)
	}
	d := &planDecoder{}
	out := &ir.Policy{Static: &ir.Static{}, Plans: &ir.Plans{}, Funcs: &ir.Funcs{}}
	for _, s := range p.GetStatic().GetStrings() {
		out.Static.Strings = append(out.Static.Strings, &ir.StringConst{Value: s.GetValue()})
	}
	for _, b := range p.GetStatic().GetBuiltinFuncs() {
		out.Static.BuiltinFuncs = append(out.Static.BuiltinFuncs, &ir.BuiltinFunc{Name: b.GetName()})
	}
	for _, pl := range p.GetPlans().GetPlans() {
		out.Plans.Plans = append(out.Plans.Plans, &ir.Plan{Name: pl.GetName(), Blocks: d.blocks(pl.GetBlocks())})
	}
	for _, f := range p.GetFuncs().GetFuncs() {
		fn := &ir.Func{Name: f.GetName(), Return: ir.Local(f.GetResult()), Blocks: d.blocks(f.GetBlocks()), Path: f.GetPath()}
		for _, l := range f.GetParams() {
			fn.Params = append(fn.Params, ir.Local(l))
		}
		out.Funcs.Funcs = append(out.Funcs.Funcs, fn)
	}
	if d.err != nil {
		return nil, d.err
	}
	return out, nil
}

// planDecoder turns plan.proto's messages into package ir's statements; the first statement
// it does not know is its error.
type planDecoder struct{ err error }

func (d *planDecoder) blocks(in []*pb.Block) []*ir.Block {
	out := make([]*ir.Block, len(in))
	for i, b := range in {
		out[i] = d.block(b)
	}
	return out
}

func (d *planDecoder) block(b *pb.Block) *ir.Block {
	if b == nil {
		return nil
	}
	out := &ir.Block{Stmts: make([]ir.Stmt, 0, len(b.GetStmts()))}
	for _, s := range b.GetStmts() {
		if st := d.stmt(s); st != nil {
			out.Stmts = append(out.Stmts, st)
		}
	}
	return out
}

func operandOf(o *pb.Operand) ir.Operand {
	switch v := o.GetValue().GetKind().(type) {
	case *pb.Val_Local:
		return ir.Operand{Value: ir.Local(v.Local)}
	case *pb.Val_StringIndex:
		return ir.Operand{Value: ir.StringIndex(v.StringIndex)}
	case *pb.Val_Bool:
		return ir.Operand{Value: ir.Bool(v.Bool)}
	}
	return ir.Operand{} // a nil Value, which New refuses
}

func operandsOf(os []*pb.Operand) []ir.Operand {
	out := make([]ir.Operand, len(os))
	for i, o := range os {
		out[i] = operandOf(o)
	}
	return out
}

func (d *planDecoder) stmt(s *pb.Stmt) ir.Stmt {
	var out ir.Stmt
	switch k := s.GetKind().(type) {
	case *pb.Stmt_ArrayAppendStmt:
		out = &ir.ArrayAppendStmt{Value: operandOf(k.ArrayAppendStmt.GetValue()), Array: ir.Local(k.ArrayAppendStmt.GetArray())}
	case *pb.Stmt_AssignIntStmt:
		out = &ir.AssignIntStmt{Value: k.AssignIntStmt.GetValue(), Target: ir.Local(k.AssignIntStmt.GetTarget())}
	case *pb.Stmt_AssignVarOnceStmt:
		out = &ir.AssignVarOnceStmt{Source: operandOf(k.AssignVarOnceStmt.GetSource()), Target: ir.Local(k.AssignVarOnceStmt.GetTarget())}
	case *pb.Stmt_AssignVarStmt:
		out = &ir.AssignVarStmt{Source: operandOf(k.AssignVarStmt.GetSource()), Target: ir.Local(k.AssignVarStmt.GetTarget())}
	case *pb.Stmt_BlockStmt:
		out = &ir.BlockStmt{Blocks: d.blocks(k.BlockStmt.GetBlocks())}
	case *pb.Stmt_BreakStmt:
		out = &ir.BreakStmt{Index: k.BreakStmt.GetIndex()}
	case *pb.Stmt_CallDynamicStmt:
		c := &ir.CallDynamicStmt{Result: ir.Local(k.CallDynamicStmt.GetResult()), Path: operandsOf(k.CallDynamicStmt.GetPath())}
		for _, a := range k.CallDynamicStmt.GetArgs() {
			c.Args = append(c.Args, ir.Local(a))
		}
		out = c
	case *pb.Stmt_CallStmt:
		out = &ir.CallStmt{Func: k.CallStmt.GetFunction(), Args: operandsOf(k.CallStmt.GetArgs()), Result: ir.Local(k.CallStmt.GetResult())}
	case *pb.Stmt_DotStmt:
		out = &ir.DotStmt{Source: operandOf(k.DotStmt.GetSource()), Key: operandOf(k.DotStmt.GetKey()), Target: ir.Local(k.DotStmt.GetTarget())}
	case *pb.Stmt_EqualStmt:
		out = &ir.EqualStmt{A: operandOf(k.EqualStmt.GetA()), B: operandOf(k.EqualStmt.GetB())}
	case *pb.Stmt_IsArrayStmt:
		out = &ir.IsArrayStmt{Source: operandOf(k.IsArrayStmt.GetSource())}
	case *pb.Stmt_IsDefinedStmt:
		out = &ir.IsDefinedStmt{Source: ir.Local(k.IsDefinedStmt.GetSource())}
	case *pb.Stmt_IsObjectStmt:
		out = &ir.IsObjectStmt{Source: operandOf(k.IsObjectStmt.GetSource())}
	case *pb.Stmt_IsSetStmt:
		out = &ir.IsSetStmt{Source: operandOf(k.IsSetStmt.GetSource())}
	case *pb.Stmt_IsUndefinedStmt:
		out = &ir.IsUndefinedStmt{Source: ir.Local(k.IsUndefinedStmt.GetSource())}
	case *pb.Stmt_LenStmt:
		out = &ir.LenStmt{Source: operandOf(k.LenStmt.GetSource()), Target: ir.Local(k.LenStmt.GetTarget())}
	case *pb.Stmt_MakeArrayStmt:
		out = &ir.MakeArrayStmt{Capacity: k.MakeArrayStmt.GetCapacity(), Target: ir.Local(k.MakeArrayStmt.GetTarget())}
	case *pb.Stmt_MakeNullStmt:
		out = &ir.MakeNullStmt{Target: ir.Local(k.MakeNullStmt.GetTarget())}
	case *pb.Stmt_MakeNumberIntStmt:
		out = &ir.MakeNumberIntStmt{Value: k.MakeNumberIntStmt.GetValue(), Target: ir.Local(k.MakeNumberIntStmt.GetTarget())}
	case *pb.Stmt_MakeNumberRefStmt:
		out = &ir.MakeNumberRefStmt{Index: int(k.MakeNumberRefStmt.GetIndex()), Target: ir.Local(k.MakeNumberRefStmt.GetTarget())}
	case *pb.Stmt_MakeObjectStmt:
		out = &ir.MakeObjectStmt{Target: ir.Local(k.MakeObjectStmt.GetTarget())}
	case *pb.Stmt_MakeSetStmt:
		out = &ir.MakeSetStmt{Target: ir.Local(k.MakeSetStmt.GetTarget())}
	case *pb.Stmt_NopStmt:
		out = &ir.NopStmt{}
	case *pb.Stmt_NotEqualStmt:
		out = &ir.NotEqualStmt{A: operandOf(k.NotEqualStmt.GetA()), B: operandOf(k.NotEqualStmt.GetB())}
	case *pb.Stmt_NotStmt:
		out = &ir.NotStmt{Block: d.block(k.NotStmt.GetBlock())}
	case *pb.Stmt_ObjectInsertOnceStmt:
		o := k.ObjectInsertOnceStmt
		out = &ir.ObjectInsertOnceStmt{Key: operandOf(o.GetKey()), Value: operandOf(o.GetValue()), Object: ir.Local(o.GetObject())}
	case *pb.Stmt_ObjectInsertStmt:
		o := k.ObjectInsertStmt
		out = &ir.ObjectInsertStmt{Key: operandOf(o.GetKey()), Value: operandOf(o.GetValue()), Object: ir.Local(o.GetObject())}
	case *pb.Stmt_ObjectMergeStmt:
		o := k.ObjectMergeStmt
		out = &ir.ObjectMergeStmt{A: ir.Local(o.GetA()), B: ir.Local(o.GetB()), Target: ir.Local(o.GetTarget())}
	case *pb.Stmt_ResetLocalStmt:
		out = &ir.ResetLocalStmt{Target: ir.Local(k.ResetLocalStmt.GetTarget())}
	case *pb.Stmt_ResultSetAddStmt:
		out = &ir.ResultSetAddStmt{Value: ir.Local(k.ResultSetAddStmt.GetValue())}
	case *pb.Stmt_ReturnLocalStmt:
		out = &ir.ReturnLocalStmt{Source: ir.Local(k.ReturnLocalStmt.GetSource())}
	case *pb.Stmt_ScanStmt:
		sc := k.ScanStmt
		out = &ir.ScanStmt{Source: ir.Local(sc.GetSource()), Key: ir.Local(sc.GetKey()), Value: ir.Local(sc.GetValue()), Block: d.block(sc.GetBlock())}
	case *pb.Stmt_SetAddStmt:
		out = &ir.SetAddStmt{Value: operandOf(k.SetAddStmt.GetValue()), Set: ir.Local(k.SetAddStmt.GetSet())}
	case *pb.Stmt_WithStmt:
		w := k.WithStmt
		ws := &ir.WithStmt{Local: ir.Local(w.GetLocal()), Value: operandOf(w.GetValue()), Block: d.block(w.GetBlock())}
		for _, p := range w.GetPath() {
			ws.Path = append(ws.Path, int(p))
		}
		out = ws
	default:
		if d.err == nil {
			d.err = fmt.Errorf("%w: plan statement %T", ErrUnsupported, k)
		}
		return nil
	}
	out.SetLocation(int(s.GetFile()), int(s.GetRow()), int(s.GetCol()), "", nil)
	return out
}
